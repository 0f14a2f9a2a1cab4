//! `/kubeharden` commands and the one-click commit of every fix, planned without I/O: what a
//! comment asks for, which files change and how, the commit message, and every reply the app
//! writes. The GitHub side (`pipeline::run_command`) only fetches, commits and posts.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::change::{PrFile, may_touch};
use crate::fix::fix_parsed;
use crate::lint::Linter;
use crate::markdown::{MAX_BODY, clip, code, fenced};
use crate::parsed::Parsed;
use crate::rules::Applicability;

/// What a `/kubeharden …` line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "command")]
pub enum Command {
    /// Commit the fixes: safe ones, or every one with `--unsafe`.
    Fix {
        unsafe_fixes: bool,
    },
    /// Review the head again, from scratch.
    Recheck,
    Help,
    /// `/kubeharden` followed by something it does not know: answered with the help.
    Unknown {
        text: String,
    },
}

impl Command {
    /// Whether the command makes the app write to the repository (and so needs write access).
    pub fn writes(&self) -> bool {
        matches!(self, Command::Fix { .. })
    }
}

/// The command of a comment: the first line that starts with `/kubeharden` (quoted lines, as
/// GitHub's "Quote reply" makes them, and fenced code do not count, so quoting an earlier
/// command or documenting one does not run it).
pub fn parse(body: &str) -> Option<Command> {
    let mut fenced = false;
    for line in body.lines() {
        let line = line.trim();
        if line.starts_with("```") || line.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced || line.starts_with('>') {
            continue;
        }
        let Some(rest) = line.strip_prefix("/kubeharden") else {
            continue;
        };
        // `/kubeharden-bot` or `/kubehardening` are not ours.
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        return Some(match words.as_slice() {
            ["fix"] => Command::Fix {
                unsafe_fixes: false,
            },
            ["fix", "--unsafe"] | ["fix", "--unsafe-fixes"] => Command::Fix { unsafe_fixes: true },
            ["recheck"] => Command::Recheck,
            [] | ["help"] => Command::Help,
            _ => Command::Unknown {
                text: words.join(" "),
            },
        });
    }
    None
}

/// Check-run buttons: (identifier, label, description), within GitHub's limits of 20, 20 and
/// 40 characters.
pub const APPLY_FIXES: (&str, &str, &str) = (
    "apply_fixes",
    "Apply fixes",
    "Commit the safe fixes to this branch",
);
pub const APPLY_ALL_FIXES: (&str, &str, &str) = (
    "apply_all_fixes",
    "Apply all fixes",
    "Also the unsafe ones: read them first",
);

/// The command a check-run button stands for.
pub fn from_action(identifier: &str) -> Option<Command> {
    match identifier {
        id if id == APPLY_FIXES.0 => Some(Command::Fix {
            unsafe_fixes: false,
        }),
        id if id == APPLY_ALL_FIXES.0 => Some(Command::Fix { unsafe_fixes: true }),
        _ => None,
    }
}

/// One file the commit changes.
#[derive(Debug, Clone)]
pub struct FileFix {
    pub path: String,
    pub original: String,
    pub fixed: String,
    /// Findings fixed, by rule.
    pub rules: BTreeSet<String>,
    pub findings: usize,
}

/// Every fix of a change.
#[derive(Debug, Clone, Default)]
pub struct FixSet {
    pub files: Vec<FileFix>,
    /// Files left alone, with why (workflows; a fix that failed, which is a bug).
    pub skipped: Vec<(String, String)>,
    /// Findings only an unsafe fix would resolve, when unsafe fixes were not asked for.
    pub unsafe_left: usize,
}

impl FixSet {
    pub fn findings(&self) -> usize {
        self.files.iter().map(|f| f.findings).sum()
    }

    pub fn rules(&self) -> BTreeSet<&str> {
        self.files
            .iter()
            .flat_map(|f| f.rules.iter().map(String::as_str))
            .collect()
    }
}

/// Fix the changed files as a whole, each knowing the ServiceAccounts of the whole change (as
/// the review does, so the commit matches the suggestions).
pub fn fix_change(linter: &Linter<'_>, files: &[PrFile], unsafe_fixes: bool) -> FixSet {
    let min = if unsafe_fixes {
        Applicability::Unsafe
    } else {
        Applicability::Safe
    };
    let parsed: Vec<Parsed> = files
        .iter()
        .map(|f| Parsed::new(f.source(), &linter.settings.limits))
        .collect();
    let (report, linter) = linter.lint_change(&parsed);
    let mut set = FixSet::default();
    for parsed in &parsed {
        let source = parsed.file();
        if !may_touch(&source.path) {
            if report
                .findings
                .iter()
                .any(|f| f.path == source.path && f.fixable)
            {
                set.skipped.push((
                    source.path.clone(),
                    "workflow files are never changed by the app".into(),
                ));
            }
            continue;
        }
        match fix_parsed(&linter, parsed, min) {
            Ok(result) => {
                if !unsafe_fixes {
                    set.unsafe_left += result
                        .remaining
                        .findings
                        .iter()
                        .filter(|f| f.applicability == Some(Applicability::Unsafe))
                        .count();
                }
                if result.fixed == source.text {
                    continue;
                }
                set.files.push(FileFix {
                    path: source.path.clone(),
                    original: source.text.clone(),
                    rules: result
                        .fixed_findings
                        .iter()
                        .map(|f| f.rule.clone())
                        .collect(),
                    findings: result.fixed_findings.len(),
                    fixed: result.fixed,
                });
            }
            Err(e) => set.skipped.push((source.path.clone(), e.to_string())),
        }
    }
    set
}

/// Trailer that ties a commit to the request that made it: a job run again after a crash
/// finds its own commit at the head instead of committing twice.
pub const REQUEST_TRAILER: &str = "KubeHarden-Request:";

/// The commit message: a subject naming the rules, a body naming the files.
pub fn commit_message(set: &FixSet, requester: &str, request: &str) -> String {
    let rules: Vec<&str> = set.rules().into_iter().collect();
    let subject = match rules.as_slice() {
        [one] => format!("Harden pod security: fix {one}"),
        [a, b] => format!("Harden pod security: fix {a} and {b}"),
        _ => format!("Harden pod security: fix {} rules", rules.len()),
    };
    let mut m = format!("{subject}\n\n");
    let _ = writeln!(
        m,
        "KubeHarden fixed {} finding{} in {} file{}, as @{requester} asked.\n",
        set.findings(),
        plural(set.findings()),
        set.files.len(),
        plural(set.files.len())
    );
    let _ = writeln!(m, "Rules: {}", rules.join(", "));
    m.push_str("Files:\n");
    for f in &set.files {
        let _ = writeln!(m, "- {}", quote_path(&f.path));
    }
    let _ = write!(m, "\n{REQUEST_TRAILER} {request}\n");
    m
}

/// A path as Git quotes it (`core.quotePath=false`): unchanged unless it holds a control
/// character, a `"` or a `\`; then in double quotes with C escapes (`\n`, `\t`, `\"`, `\\`,
/// octal for the rest). A file name is the pull request author's text: raw, a newline in it
/// would write lines of its own into the commit message, a forged request trailer among them.
pub fn quote_path(path: &str) -> String {
    let special = |c: char| c.is_control() || c == '"' || c == '\\';
    if !path.chars().any(special) {
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len() + 2);
    out.push('"');
    for c in path.chars() {
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:03o}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a commit message is the one made for this request.
pub fn made_for(message: &str, request: &str) -> bool {
    message
        .lines()
        .any(|l| l.strip_prefix(REQUEST_TRAILER).map(str::trim) == Some(request))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Marker in every reply, so a job run again after a crash does not reply twice.
pub fn reply_marker(request: &str) -> String {
    format!("<!-- kubeharden:reply={request} -->")
}

/// What the app answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Help,
    Unknown(String),
    /// The user may not ask for this; `recheck` also admits the pull request's author.
    NotAllowed {
        permission: String,
        recheck: bool,
    },
    Closed,
    NothingToFix {
        unsafe_left: usize,
    },
    Committed {
        sha: String,
        url: String,
        moved_from: Option<String>,
    },
    /// A run of this request committed before (and crashed before it could say so).
    CommittedEarlier {
        sha: String,
        url: String,
    },
    /// A fork: the patch to apply by hand, as the app never pushes to forks.
    ForkPatch,
    /// The branch kept moving while the app committed.
    Raced {
        head: String,
    },
    BadConfig(String),
    Failed(String),
    /// A button on the check run of an older commit.
    Stale {
        head: String,
    },
}

/// The Markdown of a reply. `set` is the fix set the reply is about, when there is one.
pub fn reply(reply: &Reply, requester: &str, request: &str, set: Option<&FixSet>) -> String {
    let none = FixSet::default();
    let mut b = format!("@{requester} ");
    match reply {
        Reply::Help | Reply::Unknown(_) => {
            if let Reply::Unknown(text) = reply {
                let _ = writeln!(b, "KubeHarden does not know the command {}.\n", code(text));
            } else {
                b.push_str("KubeHarden answers these commands in a pull request comment:\n\n");
            }
            b.push_str(HELP);
        }
        Reply::NotAllowed {
            permission,
            recheck: false,
        } => {
            let _ = write!(
                b,
                "only people with write access to this repository can have KubeHarden commit to it (your access: {}). Each suggestion in the review can still be committed by someone who has it.",
                code(permission)
            );
        }
        Reply::NotAllowed {
            permission,
            recheck: true,
        } => {
            let _ = write!(
                b,
                "only the pull request's author and people with write access to this repository can ask for a recheck (your access: {}).",
                code(permission)
            );
        }
        Reply::CommittedEarlier { sha, url } => {
            let _ = write!(
                b,
                "committed {}: the fixes are on the branch. The review is being updated.",
                commit_link(sha, url)
            );
        }
        Reply::Closed => {
            b.push_str("this pull request is closed: KubeHarden commits to open ones only.");
        }
        Reply::NothingToFix { unsafe_left } => {
            b.push_str("there is nothing KubeHarden can fix in the files this pull request changes, so nothing was committed.");
            if let Some(set) = set {
                skipped(&mut b, set);
            }
            if *unsafe_left > 0 {
                let _ = write!(
                    b,
                    " {unsafe_left} finding{} {} an unsafe fix: comment `/kubeharden fix --unsafe` to commit those after reading them in the review.",
                    plural(*unsafe_left),
                    if *unsafe_left == 1 { "has" } else { "have" }
                );
            }
        }
        Reply::Committed {
            sha,
            url,
            moved_from,
        } => {
            let set = set.unwrap_or(&none);
            let _ = writeln!(
                b,
                "committed {}: {} fix{} in {} file{} ({}). The review is being updated.",
                commit_link(sha, url),
                set.findings(),
                if set.findings() == 1 { "" } else { "es" },
                set.files.len(),
                plural(set.files.len()),
                set.rules()
                    .iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if let Some(old) = moved_from {
                let _ = writeln!(
                    b,
                    "\nThe branch moved away from `{}` while KubeHarden was committing; the fixes were worked out again on the new head, and nothing was force-pushed.",
                    short(old)
                );
            }
            if set.unsafe_left > 0 {
                let _ = writeln!(
                    b,
                    "\n{} finding{} {} only an unsafe fix, which was left out: `/kubeharden fix --unsafe` commits it after you have read it in the review.",
                    set.unsafe_left,
                    plural(set.unsafe_left),
                    if set.unsafe_left == 1 { "has" } else { "have" }
                );
            }
            skipped(&mut b, set);
        }
        Reply::ForkPatch => {
            let set = set.unwrap_or(&none);
            let _ = writeln!(
                b,
                "this pull request comes from a fork, and KubeHarden never pushes to forks. The author can commit the review's suggestions one by one or in a batch, or apply this patch ({} fix{} in {} file{}) with `git apply`:\n",
                set.findings(),
                if set.findings() == 1 { "" } else { "es" },
                set.files.len(),
                plural(set.files.len())
            );
            patch_block(&mut b, set);
            skipped(&mut b, set);
        }
        Reply::Raced { head } => {
            let _ = write!(
                b,
                "the branch kept moving while KubeHarden was committing (it is now at `{}`), so nothing was committed and nothing was force-pushed. Comment `/kubeharden fix` again once the pushes have settled.",
                short(head)
            );
        }
        Reply::Stale { head } => {
            let _ = write!(
                b,
                "that button belongs to the check run of an older commit; the branch is now at `{}`, so nothing was committed. Use the button on the newest KubeHarden check run, or comment `/kubeharden fix`.",
                short(head)
            );
        }
        Reply::BadConfig(problem) => {
            let _ = write!(
                b,
                "the base branch's KubeHarden configuration does not load, so nothing was committed:\n\n{}",
                fenced(problem, "")
            );
        }
        Reply::Failed(problem) => {
            let _ = write!(
                b,
                "KubeHarden could not finish this and gave up; nothing was committed.\n\n{}",
                fenced(problem, "")
            );
        }
    }
    // Clipped before the marker, which must survive: a retry looks for it.
    let mut b = clip(&b, MAX_BODY - 200);
    let _ = write!(b, "\n\n{}", reply_marker(request));
    b
}

/// The first seven characters of a commit id.
fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}

fn commit_link(sha: &str, url: &str) -> String {
    let short = short(sha);
    if url.starts_with("https://") || url.starts_with("http://") {
        format!("[`{short}`]({url})")
    } else {
        format!("`{short}`")
    }
}

const HELP: &str = "| command | what it does | who may |
|---|---|---|
| `/kubeharden fix` | commits every safe fix to this pull request's branch, as one commit | people with write access |
| `/kubeharden fix --unsafe` | the same, with the unsafe fixes too (they can change how a workload runs: read them in the review first) | people with write access |
| `/kubeharden recheck` | reviews the pull request again from scratch | people with write access and the author |
| `/kubeharden help` | this table | anyone |

The **Apply fixes** button on the KubeHarden check run does what `/kubeharden fix` does. Pull requests from forks get the patch as a reply instead of a commit.";

fn skipped(b: &mut String, set: &FixSet) {
    if set.skipped.is_empty() {
        return;
    }
    b.push_str("\nLeft alone:\n");
    for (path, why) in &set.skipped {
        let _ = writeln!(b, "- {}: {}", code(path), code(why));
    }
}

/// The patch of a fix set as a collapsed `diff` block, cut where a comment would run over
/// GitHub's size limit.
fn patch_block(b: &mut String, set: &FixSet) {
    let mut patch = String::new();
    for f in &set.files {
        patch.push_str(&unified_diff(&f.path, &f.original, &f.fixed));
    }
    // Room for the rest of the reply.
    const BUDGET: usize = MAX_BODY - 4_000;
    let mut note = "";
    if patch.len() > BUDGET {
        let mut cut = BUDGET;
        while !patch.is_char_boundary(cut) {
            cut -= 1;
        }
        let end = patch[..cut].rfind('\n').map_or(0, |i| i + 1);
        patch.truncate(end);
        note = "\nThe patch is too long for a comment and was cut: run `kubeharden fix --write --unsafe-fixes` on the branch for all of it.\n";
    }
    let _ = writeln!(
        b,
        "<details><summary>Patch</summary>\n\n{}\n</details>{note}",
        fenced(&patch, "diff")
    );
}

/// A unified diff with git-style headers and three lines of context.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    let diff = similar::TextDiff::from_lines(old, new);
    let mut out = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_from_their_own_line_only() {
        assert_eq!(
            parse("/kubeharden fix"),
            Some(Command::Fix {
                unsafe_fixes: false
            })
        );
        assert_eq!(
            parse("Thanks!\n  /kubeharden fix --unsafe  \nbye"),
            Some(Command::Fix { unsafe_fixes: true })
        );
        assert_eq!(parse("/kubeharden recheck"), Some(Command::Recheck));
        assert_eq!(parse("/kubeharden"), Some(Command::Help));
        assert_eq!(parse("/kubeharden help"), Some(Command::Help));
        assert_eq!(
            parse("/kubeharden fix everything"),
            Some(Command::Unknown {
                text: "fix everything".into()
            })
        );
        assert_eq!(parse("please run /kubeharden fix"), None);
        assert_eq!(parse("> /kubeharden fix\n\nI disagree"), None);
        assert_eq!(parse("```\n/kubeharden fix\n```"), None);
        assert_eq!(parse("/kubehardening fix"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn buttons_fit_githubs_limits() {
        for (id, label, description) in [APPLY_FIXES, APPLY_ALL_FIXES] {
            assert!(id.len() <= 20 && label.chars().count() <= 20);
            assert!(description.chars().count() <= 40, "{description}");
            assert!(from_action(id).is_some());
        }
        assert_eq!(from_action("something_else"), None);
    }

    #[test]
    fn the_request_trailer_is_found_again_and_only_for_its_request() {
        let set = FixSet {
            files: vec![FileFix {
                path: "a.yaml".into(),
                original: "a".into(),
                fixed: "b".into(),
                rules: ["privileged".to_string()].into(),
                findings: 1,
            }],
            ..Default::default()
        };
        let m = commit_message(&set, "octocat", "d-1");
        assert!(m.starts_with("Harden pod security: fix privileged\n\n"));
        assert!(made_for(&m, "d-1"));
        assert!(!made_for(&m, "d-10"));
        assert!(!made_for("KubeHarden-Request: d-1 and more", "d-1"));
    }

    #[test]
    fn file_names_with_control_characters_are_quoted_in_the_commit_message() {
        let set = FixSet {
            files: vec![FileFix {
                path: "a.yaml\nKubeHarden-Request: d-2\n\u{1b}[31m\"q\"\\.yaml".into(),
                original: "a".into(),
                fixed: "b".into(),
                rules: ["privileged".to_string()].into(),
                findings: 1,
            }],
            ..Default::default()
        };
        let m = commit_message(&set, "octocat", "d-1");
        assert!(
            m.contains("- \"a.yaml\\nKubeHarden-Request: d-2\\n\\033[31m\\\"q\\\"\\\\.yaml\"\n"),
            "{m}"
        );
        assert!(!m.chars().any(|c| c.is_control() && c != '\n'), "{m:?}");
        // The name cannot pass for the trailer of another request.
        assert!(made_for(&m, "d-1"));
        assert!(!made_for(&m, "d-2"));
        // As Git quotes them: plain names stay as they are, UTF-8 included.
        assert_eq!(quote_path("deploy/web app.yaml"), "deploy/web app.yaml");
        assert_eq!(quote_path("déploiement.yaml"), "déploiement.yaml");
        assert_eq!(quote_path("a\tb\u{7f}"), "\"a\\tb\\177\"");
        assert_eq!(quote_path("\u{85}"), "\"\\302\\205\"");
    }

    #[test]
    fn user_text_in_replies_stays_code() {
        let r = reply(
            &Reply::Unknown("`@everyone` <b>".into()),
            "octocat",
            "d",
            None,
        );
        assert!(r.contains("`` `@everyone` <b> ``"), "{r}");
        assert!(fenced("a ``` b", "").starts_with("````\n"));
    }

    /// The app's commit never carries a file whose bytes were not UTF-8: its text is not the
    /// file, and committing it would lose what follows the bad byte (or the byte itself).
    #[test]
    fn a_file_that_is_not_utf8_is_skipped_not_committed() {
        let mut bytes =
            b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: nginx:1.27\n---\n# caf".to_vec();
        bytes.extend_from_slice(b"\xe9\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: m\n");
        let files = [PrFile::from_bytes("deploy/mixed.yaml", bytes, None)];
        let registry = crate::rules::Registry::builtin().unwrap();
        let linter = Linter::new(&registry, Default::default());
        let set = fix_change(&linter, &files, true);
        assert!(set.files.is_empty(), "{:?}", set.files);
        assert_eq!(set.skipped.len(), 1);
        assert_eq!(set.skipped[0].0, "deploy/mixed.yaml");
        assert!(set.skipped[0].1.contains("not UTF-8"), "{:?}", set.skipped);
    }
}
