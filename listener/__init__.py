"""Service Bus listener and co-hosted DTS worker: messages in, orchestrations out."""
