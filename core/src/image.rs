//! Container image references, read by the grammar of `github.com/distribution/reference` (the
//! one Docker, containerd and the kubelet use): an optional registry host with port, a
//! lower-case path, a tag and a digest; Docker Hub's defaults (`nginx` is
//! `docker.io/library/nginx:latest`).

use std::fmt;

/// What a repository's configuration says about images: where they may come from, and how bad
/// a vulnerability must be to fail the check.
#[derive(Debug, Clone)]
pub struct ImagePolicy {
    /// Registry (and path) prefixes images must come from; any when empty.
    pub allowed_registries: Vec<String>,
    /// Vulnerabilities at or above this severity are errors; below it, notes.
    pub fail_on: crate::vuln::VulnSeverity,
}

impl Default for ImagePolicy {
    fn default() -> Self {
        Self {
            allowed_registries: Vec::new(),
            fail_on: crate::vuln::VulnSeverity::High,
        }
    }
}

/// A parsed reference. `domain` is normalized (`docker.io` for Docker Hub) and `path` carries
/// Docker Hub's `library/` for official images.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("repository name must have at least one component")]
    Empty,
    #[error("invalid reference format: repository name must be lowercase")]
    Uppercase,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("invalid reference format: {0}")]
    Format(&'static str),
    #[error(
        "invalid tag format: a tag is 1 to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    Tag,
    #[error("invalid digest format: {0}")]
    Digest(&'static str),
    #[error("invalid repository name: 64 hexadecimal characters look like an image id, not a name")]
    HexName,
}

/// The longest repository name (domain and path) registries accept.
const NAME_MAX: usize = 255;

pub fn parse(reference: &str) -> Result<ImageRef, RefError> {
    if reference.is_empty() {
        return Err(RefError::Empty);
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RefError::Format("it contains white space"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
        None => (reference, None),
    };
    // The tag follows the last `:` after the last `/`: `host:5000/app` has no tag.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let tag = &rest[last_slash + i + 1..];
            if !valid_tag(tag) {
                return Err(RefError::Tag);
            }
            (&rest[..last_slash + i], Some(tag.to_string()))
        }
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(RefError::Empty);
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains('.')
                || first.contains(':')
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    if !valid_domain(domain) {
        return Err(RefError::Format(
            "the registry host is not a host name with an optional port",
        ));
    }
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    if !valid_path(path) {
        if valid_path(&path.to_ascii_lowercase()) {
            return Err(RefError::Uppercase);
        }
        return Err(RefError::Format(
            "path components are lower-case letters and digits joined by `.`, `_`, `__` or `-`",
        ));
    }
    if domain == "docker.io" && path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RefError::HexName);
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if domain.len() + 1 + path.len() > NAME_MAX {
        return Err(RefError::NameTooLong);
    }
    Ok(ImageRef {
        domain: domain.to_string(),
        path,
        tag,
        digest,
    })
}

impl ImageRef {
    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag a pull uses: `latest` when none is written.
    pub fn effective_tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

/// The fully qualified form: `docker.io/library/nginx:latest`, `ghcr.io/a/b:1@sha256:…`.
impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        match (&self.tag, &self.digest) {
            (Some(tag), _) => write!(f, ":{tag}")?,
            (None, None) => f.write_str(":latest")?,
            (None, Some(_)) => {}
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn parse_digest(digest: &str) -> Result<String, RefError> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(RefError::Digest("expected `algorithm:hex`"));
    };
    let want = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        a if !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-_".contains(&b)) =>
        {
            return Err(RefError::Digest("unsupported digest algorithm"));
        }
        _ => return Err(RefError::Digest("expected `algorithm:hex`")),
    };
    if hex.len() != want
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(RefError::Digest(
            "the hash must be lower-case hexadecimal of its algorithm's length",
        ));
    }
    Ok(digest.to_string())
}

/// `[\w][\w.-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

/// `host[:port]`, a host being dot-separated labels or an IPv6 address in brackets.
pub fn valid_domain(domain: &str) -> bool {
    let (host, port) = if let Some(v6) = domain.strip_prefix('[') {
        let Some((addr, rest)) = v6.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match rest.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if rest.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if domain.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// `path-component ('/' path-component)*`, each `[a-z0-9]+` joined by `.`, `_`, `__` or `-`+.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: one `.`, one `_`, two `_`, or any run of `-`.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Whether `image` is under one of the allowed prefixes: a registry host (`ghcr.io`, matching
/// every image there) or a host and path prefix (`ghcr.io/acme/`, or `ghcr.io/acme` matching
/// that repository and those below it). Docker Hub images are `docker.io/…`.
pub fn allowed(image: &ImageRef, prefixes: &[String]) -> bool {
    let name = image.name();
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        let p = p
            .strip_prefix("index.docker.io")
            .map_or_else(|| p.to_string(), |rest| format!("docker.io{rest}"));
        name == p || name.starts_with(&format!("{p}/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    #[test]
    fn references_normalise_as_docker_reads_them() {
        let table = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
            ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
            ("ghcr.io/acme/api:3.1.0", "ghcr.io/acme/api:3.1.0"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/team/app:v2", "localhost:5000/team/app:v2"),
            (
                "registry.internal:5000/a/b/c/d",
                "registry.internal:5000/a/b/c/d:latest",
            ),
            ("127.0.0.1:5000/app:dev", "127.0.0.1:5000/app:dev"),
            ("[::1]:5000/app:1", "[::1]:5000/app:1"),
            ("Registry.Example.com/app:1", "Registry.Example.com/app:1"),
            (
                "a__b/c-d--e.f_g:T_a.g-1",
                "docker.io/a__b/c-d--e.f_g:T_a.g-1",
            ),
            // A bare host:port with no path is Docker Hub's `localhost` image with a tag.
            ("localhost:5000", "docker.io/library/localhost:5000"),
        ];
        for (input, want) in table {
            assert_eq!(ok(input), want, "{input}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            ok(&format!("nginx@{digest}")),
            format!("docker.io/library/nginx@{digest}")
        );
        let r = parse(&format!("quay.io/x/y:1.0@{digest}")).unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (Some("1.0"), Some(digest.as_str()))
        );
    }

    #[test]
    fn unparsable_references_say_why() {
        let table: &[(&str, RefError)] = &[
            ("", RefError::Empty),
            ("Nginx", RefError::Uppercase),
            ("acme/Api:1", RefError::Uppercase),
            ("ghcr.io/Acme/api", RefError::Uppercase),
            ("nginx:", RefError::Tag),
            ("nginx:-dev", RefError::Tag),
            (
                "nginx:1.0:2",
                RefError::Format(
                    "path components are lower-case letters and digits joined by `.`, `_`, `__` or `-`",
                ),
            ),
            (
                "nginx@sha256:abc",
                RefError::Digest(
                    "the hash must be lower-case hexadecimal of its algorithm's length",
                ),
            ),
            (
                "nginx@md5:abcdef",
                RefError::Digest("unsupported digest algorithm"),
            ),
            ("nginx@latest", RefError::Digest("expected `algorithm:hex`")),
            ("nginx latest", RefError::Format("it contains white space")),
            (
                "-nginx",
                RefError::Format(
                    "path components are lower-case letters and digits joined by `.`, `_`, `__` or `-`",
                ),
            ),
            (
                "a//b",
                RefError::Format(
                    "path components are lower-case letters and digits joined by `.`, `_`, `__` or `-`",
                ),
            ),
            (
                "a...b/c",
                RefError::Format("the registry host is not a host name with an optional port"),
            ),
            (
                "host:port/app",
                RefError::Format("the registry host is not a host name with an optional port"),
            ),
            (&"a".repeat(64), RefError::HexName),
        ];
        for (input, want) in table {
            assert_eq!(parse(input).as_ref().err(), Some(want), "{input}");
        }
        let long = format!("registry.example.com/{}", "a".repeat(250));
        assert_eq!(parse(&long).err(), Some(RefError::NameTooLong));
        assert_eq!(
            parse(&format!("nginx:{}", "t".repeat(129))).err(),
            Some(RefError::Tag)
        );
        let digest = format!("sha256:{}", "A".repeat(64));
        assert!(parse(&format!("nginx@{digest}")).is_err(), "upper-case hex");
    }

    #[test]
    fn allow_lists_match_hosts_and_path_prefixes() {
        let img = |s| parse(s).unwrap();
        let list = vec![
            "ghcr.io/acme/".to_string(),
            "registry.internal:5000".to_string(),
            "docker.io/library".to_string(),
        ];
        assert!(allowed(&img("ghcr.io/acme/api:1"), &list));
        assert!(allowed(&img("ghcr.io/acme/team/api:1"), &list));
        assert!(!allowed(&img("ghcr.io/acmecorp/api:1"), &list));
        assert!(allowed(&img("registry.internal:5000/x:1"), &list));
        assert!(!allowed(&img("registry.internal/x:1"), &list));
        assert!(allowed(&img("nginx:1"), &list));
        assert!(!allowed(&img("bitnami/redis:7"), &list));
    }
}

/// A container `image` in a file: the value as written and its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    pub path: String,
    pub line: usize,
    pub image: String,
}

/// Every container image of every workload in the files (what a scan looks at).
pub fn uses(
    files: &[crate::source::SourceFile],
    limits: &crate::yaml::Limits,
    kinds: &crate::workloads::WorkloadKinds,
) -> Vec<ImageUse> {
    let mut out = Vec::new();
    for file in files {
        let stream = crate::yaml::parse(&file.text, limits);
        for doc in &stream.documents {
            let crate::k8s::Contents::Objects(objects) = crate::k8s::objects(doc) else {
                continue;
            };
            for object in &objects {
                for c in kinds
                    .locate(doc, object)
                    .workloads
                    .iter()
                    .flat_map(|w| w.containers.iter())
                {
                    if let Some(node) = doc.get(c.node, "image")
                        && let Some(image) = doc.str_value(node)
                    {
                        out.push(ImageUse {
                            path: file.path.clone(),
                            line: file.line_col(doc.node(node).range.start()).line,
                            image: image.to_string(),
                        });
                    }
                }
            }
        }
    }
    out
}
