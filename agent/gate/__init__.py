"""The gate: the agent's nftables table, and the kernel facts it reads (neighbours, conntrack)."""
