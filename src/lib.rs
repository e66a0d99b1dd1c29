//! tagflow: a GitOps image-update agent.
//!
//! Stages, in the order data flows through a cycle: [`config`], [`registry`], [`policy`],
//! [`rewrite`], [`gitops`], [`notify`]; [`cycle`] runs them in order and [`server`] serves
//! health, metrics and registry webhooks.

pub mod yamlspan;
pub mod rewrite;
