"""The service path only: receive → parse → dispatch → decide → settle, and the Service that hosts it with the
DTS worker. Everything it stands on (settings, clients, the contract, observability) lives in sbworker/."""
