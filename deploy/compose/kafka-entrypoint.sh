#!/bin/sh
# Writes server.properties from KAFKA_* variables (the apache/kafka image's convention: KAFKA_NODE_ID
# -> node.id, `__` -> `_`), formats the data folder on first start, then runs the broker.
set -eu
config=/opt/kafka/config/server.properties
: > "$config"
env | while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_CLUSTER_ID) ;;
    KAFKA_*)
      key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed 's/__/\x01/g; s/_/./g; s/\x01/_/g')
      printf '%s=%s\n' "$key" "$value" >> "$config" ;;
  esac
done
grep -q '^log\.dirs=' "$config" || echo "log.dirs=/var/lib/kafka/data" >> "$config"
data=$(sed -n 's/^log\.dirs=//p' "$config" | cut -d, -f1)
classpath='/opt/kafka/libs/*'
if [ ! -f "$data/meta.properties" ]; then
  cluster_id=${KAFKA_CLUSTER_ID:-$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)}
  java -cp "$classpath" kafka.tools.StorageTool format -t "$cluster_id" -c "$config" >/dev/null
fi
# shellcheck disable=SC2086  # the heap options are several words on purpose
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp "$classpath" kafka.Kafka "$config"
