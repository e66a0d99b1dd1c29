//! tagflow: a GitOps image-update agent.
//!
//! Stages, in the order data flows through a cycle: [`config`], [`registry`], [`policy`],
//! [`rewrite`], [`gitops`], [`notify`]; [`cycle`] runs them in order and [`server`] serves
//! health, metrics and registry webhooks.

pub mod cluster;
pub mod config;
pub mod control;
pub mod cycle;
pub mod gitops;
pub mod infra;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod registry;
pub mod rewrite;
pub mod rollout;
pub mod runner;
pub mod secret;
pub mod server;
pub mod yamlspan;
