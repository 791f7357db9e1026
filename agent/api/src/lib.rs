//! Requests and replies on the agent's unix socket: one JSON object per line.
