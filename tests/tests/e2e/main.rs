//! End-to-end tests: the real binaries, run together as processes.

mod bundles;
mod exec;
mod network;
mod registry;
mod splitview;
mod web;
