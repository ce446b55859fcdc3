"""What the local Kafka broker is made of, shipped inside the package so an installed Baton has it:
``pom.xml`` resolves the broker's jars from Maven Central, ``log4j2.properties`` is its logging."""
