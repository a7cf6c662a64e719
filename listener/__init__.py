"""The service path (receive → parse → dispatch → decide → settle) and the wiring it needs (config → clients)."""
