# Apache Kafka (KRaft) from the same Maven jars the local stack uses: Kafka has no Debian package
# and this image needs no registry beyond Debian's packages and Maven Central.
# Build from the repository root:  docker build -f deploy/compose/kafka.Dockerfile -t baton-kafka:4.1.1 .
# The tag's version is the pom's kafka.version (a test keeps them equal).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS jre
# Slim Debian images leave out man pages, yet the JRE's post-install links one.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openjdk-17-jre-headless \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

FROM jre AS jars
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends maven \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY libs/platform/kafka_runtime/pom.xml /build/pom.xml
# A Java trust store bind-mounted at /run/host-java-cacerts for the build (Podman: -v) is used for
# Maven Central when present, never copied in; the downloaded repository is not kept.
RUN if [ -f /run/host-java-cacerts ]; then export MAVEN_OPTS="-Djavax.net.ssl.trustStore=/run/host-java-cacerts"; fi \
 && mvn -q -B -Dmaven.repo.local=/tmp/m2 -f /build/pom.xml dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory=/opt/kafka/libs \
 && rm -rf /tmp/m2

FROM jre
RUN groupadd --system --gid 10002 kafka && useradd --system --uid 10002 --gid kafka --no-create-home kafka \
 && mkdir -p /var/lib/kafka/data /opt/kafka/config && chown -R kafka:kafka /var/lib/kafka /opt/kafka/config
COPY --from=jars /opt/kafka/libs /opt/kafka/libs
COPY libs/platform/kafka_runtime/log4j2.properties /opt/kafka/log4j2.properties
COPY deploy/compose/kafka-entrypoint.sh /opt/kafka/entrypoint.sh
USER 10002:10002
VOLUME /var/lib/kafka/data
EXPOSE 9092 9093
ENTRYPOINT ["/opt/kafka/entrypoint.sh"]
