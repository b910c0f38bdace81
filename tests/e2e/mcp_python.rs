//! The official Python MCP client against the real binary (written by the interop work).
