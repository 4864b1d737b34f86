"""RabbitMQ: topology, typed messages, publisher with confirms, consumer helpers."""
