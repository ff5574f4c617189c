//! spindle-net's integration tests: real servers on loopback, each started and stopped by its
//! test, with bounded reads and runs (support.rs).

mod ca_certificates;
mod client;
mod config;
mod lifecycle;
mod limits;
mod raw_server;
mod requests;
mod support;
mod tcp;
mod tcp_tls;
mod url;
mod websocket;
