//! End-to-end tests of appfence: the real server (router, OAuth, store, sweeper, agent
//! gateway) booted on a loopback port per test and driven over HTTP, plus the `appfence`
//! binary (`serve --demo`, client commands) run as a child process.
//!
//! One test binary on purpose: every extra file under tests/ is another slow link.

mod harness;
mod idp;
mod privileged;
mod process;
mod wire;
mod writers;

mod access;
mod agent;
mod alerts;
mod alerts_cli;
mod browser;
mod cancel_races;
mod cli;
mod concurrency;
mod console;
mod console_alerts;
mod console_browser;
mod console_oidc;
mod crash;
mod credentials;
mod demo;
mod endpoints;
mod errors;
mod file_indicators;
mod golden;
mod hostile;
mod indicators;
mod lifecycle;
mod login;
mod lookups;
mod observability;
mod odata;
mod offboarding;
mod oidc_flows;
mod openapi;
mod packaging;
mod postgres_cli;
mod properties;
mod ratelimits;
mod reliability;
mod reload;
mod replica_faults;
mod replicas;
mod secrets_at_rest;
mod sign_in;
mod storage_faults;
mod tenants;
mod timeouts;
mod tls;
mod tokens;
mod upgrade;
