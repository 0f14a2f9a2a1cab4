//! What one finding asks of the document: a value at a path from a node. Rules produce needs,
//! the policy rewrites them (hoisting, guards), the planner merges and writes them; a type of
//! its own so that policy and planner both use it without importing each other.

use crate::rules::{Applicability, ImageFit};
use crate::yaml::NodeId;

use super::write::Action;

/// One rule's wish for one place, before needs are merged per node.
#[derive(Debug, Clone)]
pub(crate) struct Need {
    pub doc: usize,
    /// The node the path starts from (a container, the pod spec, a volume mount).
    pub base: NodeId,
    /// For a container: the node holding its pod-level settings (where hoisted needs go).
    pub pod: Option<NodeId>,
    pub path: Vec<String>,
    pub action: Action,
    pub applicability: Applicability,
    pub rule: String,
    /// Indices of the findings it came from.
    pub findings: Vec<usize>,
    /// For a need hoisted to the pod: the container-level needs it stands for.
    pub from: Vec<Need>,
    /// What of the container's image the fix depends on, and what was decided for it.
    pub fit: Option<ImageFit>,
    pub image: Option<crate::decision::Fitting>,
    /// Stays on its container even where the pod could hold it for all (another container
    /// of the pod must not inherit it).
    pub no_hoist: bool,
    /// Written as part of this node's fix rather than its own base's (a volume that a
    /// container's mount needs goes in with the mount, all or nothing).
    pub group: Option<NodeId>,
}
