"""The HTTP intake gateway: channels submit and cancel orders over HTTP; it only produces to Kafka."""
