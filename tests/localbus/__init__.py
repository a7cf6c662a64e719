"""Tests of localbus, the Service Bus-compatible broker."""
