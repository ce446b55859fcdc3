# PostgreSQL from Debian's package (15 on bookworm), for the Compose stack without a registry.
# Build from the repository root:  docker build -f deploy/compose/postgres.Dockerfile -t baton-postgres:15 .
# Takes the official image's variables: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# The package would create and start a cluster of its own; the entrypoint makes one on first start.
RUN mkdir -p /etc/postgresql-common \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql-15 \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql \
 && chmod 700 /var/lib/postgresql/data
COPY deploy/compose/postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
