//! tagflow: a GitOps image-update agent.
//!
//! Stages, in the order data flows through a cycle: [`config`], [`registry`], [`policy`],
//! [`plan`] (with [`rewrite`]), [`gitops`] (with [`forge`] for pull-request mode), [`rollout`] (with [`k8s`] and [`smoke`]),
//! [`notify`]. [`cycle`] runs them in order; [`run`] is `tagflow run` (the loop, the
//! [`server`] and the [`infra`] watcher); [`commands`] and [`check`] are the one-shot commands.

pub mod activity;
pub mod build_info;
pub mod check;
pub mod commands;
pub mod completions;
pub mod config;
pub mod cycle;
pub mod egress;
pub mod flux_import;
pub mod forge;
pub mod gitops;
pub mod infra;
pub mod k8s;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod proc;
pub mod reference;
pub mod registry;
pub mod rewrite;
pub mod rollout;
pub mod run;
pub mod secret;
pub mod semrange;
pub mod server;
pub mod smoke;
pub mod yamlspan;
