//! Switchboard's signaling (rooms, sessions; WebSocket and gRPC transports). Work in progress.
