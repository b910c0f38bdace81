//! MCP over the real binary with rmcp's own client.
