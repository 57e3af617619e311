"""The client side: the node client, receipts, certificates, the monitor, publishing and claiming, a local community."""
