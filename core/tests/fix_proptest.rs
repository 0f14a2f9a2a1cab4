//! Property test: manifests written in many styles (indent 2 or 4, dashes at the parent's
//! column or indented, comments after values and between keys, quoting, flow and block
//! collections, CRLF, no final newline) keep every promise of `fix`; and the combinations
//! Kubernetes refuses (privileged true or false beside Bidirectional mounts, CAP_SYS_ADMIN,
//! pod-level runAsUser 0, securityContexts shared through anchors and aliases) never come out
//! of it, at the safe or the unsafe level.

mod common;

use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Profile, Registry};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Style {
    indent: usize,
    dash_indented: bool,
    crlf: bool,
    final_newline: bool,
    comments: bool,
    quote: u8,
}

#[derive(Debug, Clone)]
enum Ctx {
    Absent,
    Null,
    EmptyFlow,
    Flow(Vec<(&'static str, &'static str)>),
    Block(Vec<(&'static str, &'static str)>, Option<Caps>),
}

#[derive(Debug, Clone)]
struct Caps {
    add: Vec<&'static str>,
    drop: Vec<&'static str>,
    flow: bool,
}

#[derive(Debug, Clone)]
struct Container {
    ctx: Ctx,
    host_port: bool,
    flow_ports: bool,
    /// A hostPath mount with `mountPropagation: Bidirectional`.
    bidirectional: bool,
    /// Anchor this container's securityContext (`&sc0`), or use the first anchored one
    /// (`*sc0`) instead of its own.
    share: Share,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Share {
    Own,
    Anchor,
    Alias,
}

#[derive(Debug, Clone)]
struct Manifest {
    kind: u8,
    style: Style,
    pod_ctx: Ctx,
    host_pid: bool,
    containers: Vec<Container>,
    init: Option<Container>,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop_oneof![Just(2usize), Just(4usize)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..3,
    )
        .prop_map(
            |(indent, dash_indented, crlf, final_newline, comments, quote)| Style {
                indent,
                dash_indented,
                crlf,
                final_newline,
                comments,
                quote,
            },
        )
}

fn fields() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    proptest::sample::subsequence(
        vec![
            ("privileged", "true"),
            ("allowPrivilegeEscalation", "true"),
            ("readOnlyRootFilesystem", "false"),
            ("runAsNonRoot", "false"),
            ("runAsUser", "1000"),
            ("procMount", "Unmasked"),
            ("privileged", "false"),
            ("runAsUser", "0"),
        ],
        0..4,
    )
    // One value per key: a duplicate key is another rule's business.
    .prop_map(|fields| {
        let mut seen = Vec::new();
        fields
            .into_iter()
            .filter(|(k, _)| {
                let first = !seen.contains(k);
                seen.push(*k);
                first
            })
            .collect()
    })
}

fn caps() -> impl Strategy<Value = Option<Caps>> {
    proptest::option::of(
        (
            proptest::sample::subsequence(
                vec![
                    "NET_BIND_SERVICE",
                    "SYS_ADMIN",
                    "CAP_SYS_ADMIN",
                    "NET_RAW",
                    "CHOWN",
                ],
                0..3,
            ),
            proptest::sample::subsequence(vec!["all", "ALL", "NET_RAW"], 0..2),
            any::<bool>(),
        )
            .prop_map(|(add, drop, flow)| Caps { add, drop, flow }),
    )
}

fn ctx() -> impl Strategy<Value = Ctx> {
    prop_oneof![
        Just(Ctx::Absent),
        Just(Ctx::Null),
        Just(Ctx::EmptyFlow),
        fields().prop_map(Ctx::Flow),
        (fields(), caps()).prop_map(|(f, c)| Ctx::Block(f, c)),
    ]
}

fn container() -> impl Strategy<Value = Container> {
    (
        ctx(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            2 => Just(Share::Own),
            1 => Just(Share::Anchor),
            1 => Just(Share::Alias)
        ],
    )
        .prop_map(
            |(ctx, host_port, flow_ports, bidirectional, share)| Container {
                ctx,
                host_port,
                flow_ports,
                bidirectional,
                share,
            },
        )
}

fn manifest() -> impl Strategy<Value = Manifest> {
    (
        0u8..3,
        style(),
        prop_oneof![
            Just(Ctx::Absent),
            fields().prop_map(|f| Ctx::Block(
                // The pod may set runAsUser: 0 for every container that sets none.
                f.into_iter()
                    .filter(|(k, _)| *k == "runAsNonRoot" || *k == "runAsUser")
                    .collect(),
                None
            ))
        ],
        any::<bool>(),
        proptest::collection::vec(container(), 1..3),
        proptest::option::of(container()),
    )
        .prop_map(
            |(kind, style, pod_ctx, host_pid, containers, init)| Manifest {
                kind,
                style,
                pod_ctx,
                host_pid,
                containers,
                init,
            },
        )
}

struct Out {
    lines: Vec<String>,
    s: Style,
}

impl Out {
    fn line(&mut self, depth: usize, text: impl Into<String>) {
        self.lines.push(format!(
            "{}{}",
            " ".repeat(depth * self.s.indent),
            text.into()
        ));
    }

    fn comment(&mut self, depth: usize, text: &str) {
        if self.s.comments {
            self.line(depth, format!("# {text}"));
        }
    }

    fn trailing(&self, text: &str) -> String {
        if self.s.comments {
            format!("  # {text}")
        } else {
            String::new()
        }
    }

    fn quoted(&self, v: &str) -> String {
        match self.s.quote {
            0 => v.to_string(),
            1 => format!("'{v}'"),
            _ => format!("\"{v}\""),
        }
    }

    /// Write `key:` and a block sequence of `items` under it at `depth`.
    fn seq_key(&mut self, depth: usize, key: &str) -> usize {
        self.line(depth, format!("{key}:"));
        if self.s.dash_indented {
            depth + 1
        } else {
            depth
        }
    }
}

/// `tag` is written after `securityContext:` (an anchor, ` &sc0`, or nothing).
fn write_ctx(o: &mut Out, depth: usize, ctx: &Ctx, tag: &str) {
    match ctx {
        Ctx::Absent => {}
        Ctx::Null => o.line(depth, format!("securityContext:{tag}")),
        Ctx::EmptyFlow => o.line(depth, format!("securityContext:{tag} {{}}")),
        Ctx::Flow(fields) => {
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            o.line(
                depth,
                format!("securityContext:{tag} {{{}}}", body.join(", ")),
            );
        }
        Ctx::Block(fields, caps) => {
            if fields.is_empty() && caps.is_none() {
                o.line(depth, format!("securityContext:{tag} {{}}"));
                return;
            }
            o.line(depth, format!("securityContext:{tag}"));
            for (i, (k, v)) in fields.iter().enumerate() {
                if i == 1 {
                    o.comment(depth + 1, "between keys");
                }
                let t = o.trailing("why");
                o.line(depth + 1, format!("{k}: {v}{t}"));
            }
            if let Some(c) = caps {
                o.line(depth + 1, "capabilities:");
                for (key, items) in [("add", &c.add), ("drop", &c.drop)] {
                    if items.is_empty() {
                        continue;
                    }
                    if c.flow {
                        o.line(depth + 2, format!("{key}: [{}]", items.join(", ")));
                    } else {
                        let d = o.seq_key(depth + 2, key);
                        for item in items {
                            o.line(d, format!("- {item}"));
                        }
                    }
                }
            }
        }
    }
}

/// `anchors` counts the securityContexts anchored so far in the document: an alias names the
/// latest one.
fn write_container(o: &mut Out, depth: usize, name: &str, c: &Container, anchors: &mut usize) {
    // `- name: x` then the rest aligned with `name`.
    let first = format!("- name: {name}");
    o.line(depth, first);
    let inner = depth;
    let pad = " ".repeat(2);
    let image = o.quoted("nginx:1.27");
    o.lines.push(format!(
        "{}{pad}image: {image}",
        " ".repeat(inner * o.s.indent)
    ));
    let mut body = Out {
        lines: Vec::new(),
        s: o.s.clone(),
    };
    if c.host_port {
        if c.flow_ports {
            body.line(0, "ports: [{containerPort: 80, hostPort: 8080}]");
        } else {
            let d = body.seq_key(0, "ports");
            body.line(d, "- containerPort: 80");
            body.lines
                .push(format!("{}  hostPort: 8080", " ".repeat(d * o.s.indent)));
        }
    }
    match c.share {
        Share::Alias if *anchors > 0 => {
            body.line(0, format!("securityContext: *sc{}", *anchors - 1));
        }
        Share::Anchor if !matches!(c.ctx, Ctx::Absent) => {
            write_ctx(&mut body, 0, &c.ctx, &format!(" &sc{anchors}"));
            *anchors += 1;
        }
        _ => write_ctx(&mut body, 0, &c.ctx, ""),
    }
    if c.bidirectional {
        let d = body.seq_key(0, "volumeMounts");
        body.line(d, "- name: host");
        let pad = " ".repeat(d * o.s.indent);
        body.lines
            .push(format!("{pad}  mountPath: /var/lib/kubelet"));
        body.lines
            .push(format!("{pad}  mountPropagation: Bidirectional"));
    }
    for l in body.lines {
        o.lines
            .push(format!("{}{pad}{l}", " ".repeat(inner * o.s.indent)));
    }
}

fn render(m: &Manifest) -> String {
    let mut o = Out {
        lines: Vec::new(),
        s: m.style.clone(),
    };
    o.comment(0, "generated");
    let (kind, spec_depth) = match m.kind {
        0 => ("Pod", 1),
        1 => ("Deployment", 3),
        _ => ("Job", 3),
    };
    o.line(
        0,
        format!(
            "apiVersion: {}",
            if m.kind == 0 {
                "v1"
            } else if m.kind == 1 {
                "apps/v1"
            } else {
                "batch/v1"
            }
        ),
    );
    o.line(0, format!("kind: {kind}"));
    o.line(0, "metadata:");
    let t = o.trailing("the name");
    o.line(1, format!("name: demo{t}"));
    o.line(0, "spec:");
    if m.kind != 0 {
        o.line(1, "template:");
        o.line(2, "spec:");
    }
    if m.host_pid {
        o.line(spec_depth, "hostPID: true");
    }
    write_ctx(&mut o, spec_depth, &m.pod_ctx, "");
    let mut anchors = 0;
    if let Some(init) = &m.init {
        let d = o.seq_key(spec_depth, "initContainers");
        write_container(&mut o, d, "init", init, &mut anchors);
    }
    let d = o.seq_key(spec_depth, "containers");
    for (i, c) in m.containers.iter().enumerate() {
        if i > 0 {
            o.comment(d, "next container");
        }
        write_container(&mut o, d, &format!("c{i}"), c, &mut anchors);
    }
    let containers = m.containers.iter().chain(&m.init);
    if containers.clone().any(|c| c.bidirectional) {
        let d = o.seq_key(spec_depth, "volumes");
        o.line(d, "- name: host");
        let pad = " ".repeat(d * o.s.indent);
        let ind = " ".repeat(o.s.indent);
        o.lines.push(format!("{pad}  hostPath:"));
        o.lines.push(format!("{pad}  {ind}path: /var/lib/kubelet"));
    }
    let nl = if m.style.crlf { "\r\n" } else { "\n" };
    let mut text = o.lines.join(nl);
    if m.style.final_newline {
        text.push_str(nl);
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fixes_keep_their_promises_in_every_style(m in manifest(), profile in 0u8..3) {
        let text = render(&m);
        let registry = Registry::builtin().unwrap();
        let profile = [Profile::Nsa, Profile::Restricted, Profile::Baseline][profile as usize];
        let linter = Linter::new(&registry, Settings { profile, ..Settings::default() });
        // The generator writes valid YAML; a parse error is a generator bug, not a fix bug.
        let parsed = kubeharden_core::yaml::parse(&text, &Default::default());
        prop_assert!(parsed.errors.is_empty(), "generated invalid YAML:\n{}\n{:?}", text, parsed.errors);
        if let Err(e) = common::check(&linter, "generated.yaml", &text) {
            prop_assert!(false, "{}\n--- input ---\n{}", e, text);
        }
    }
}
