//! What a rule is evaluated against: one workload of one document, and the facts around it.
//! Apart from `eval` so that scopes and checks both take it without importing each other.

use crate::k8s::{Container, KubeVersion, Workload};
use crate::yaml::Document;

pub struct Context<'a> {
    pub text: &'a str,
    pub stamp: crate::parsed::Stamp,
    pub doc: &'a Document,
    pub workload: &'a Workload,
    pub containers: &'a [Container],
    pub version: KubeVersion,
    pub images: &'a crate::image::ImagePolicy,
    pub facts: &'a crate::facts::Facts,
}
