//! End-to-end tests: the real binaries, run together as processes.

mod bundles;
mod exec;
mod faults;
mod hostile_provider;
mod hostile_tasks;
mod http;
mod jobs;
mod load;
mod nat;
mod network;
mod operator;
mod registry;
mod registry_server;
mod splitview;
mod web;
