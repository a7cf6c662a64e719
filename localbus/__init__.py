"""A small Service Bus-compatible AMQP 1.0 broker for development and tests."""
