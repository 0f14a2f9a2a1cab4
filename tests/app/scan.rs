//! Image scanning: Trivy's and Grype's JSON reports, the scanner run as a child process (with a
//! stand-in that prints real-format reports, hangs, fails or prints garbage), the findings on the
//! `image:` line, and `kubeharden lint --scan-images`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeharden::scan::{Scanner, ScannerKind};
use kubeharden_core::facts::{Facts, ImageFacts};
use kubeharden_core::lint::{Linter, Settings};
use kubeharden_core::rules::{Registry, Severity};
use kubeharden_core::source::SourceFile;
use kubeharden_core::vuln::{ScanOutcome, VulnSeverity, parse_grype, parse_trivy};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("core/tests/fixtures/scanners")
}

/// The stand-in scanner and its reports, copied to a directory of the test's own (it logs
/// every scan beside itself).
pub(crate) fn stand_in() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn scans_logged(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("scans.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn report(outcome: &ScanOutcome) -> &kubeharden_core::vuln::ImageReport {
    match outcome {
        ScanOutcome::Report(r) => r,
        ScanOutcome::Failed(why) => panic!("scan failed: {why}"),
    }
}

#[test]
fn trivy_reports_read_with_counts_dedup_and_unknown_severities() {
    let r = parse_trivy(&std::fs::read(fixtures().join("trivy-vulnerable.json")).unwrap()).unwrap();
    // The libssl finding appears in two results: counted once.
    assert_eq!(r.vulnerabilities.len(), 5);
    let counts = r.counts();
    assert_eq!(counts[&VulnSeverity::Critical], 1);
    assert_eq!(counts[&VulnSeverity::High], 1);
    assert_eq!(counts[&VulnSeverity::Medium], 1);
    assert_eq!(counts[&VulnSeverity::Low], 1);
    assert_eq!(counts[&VulnSeverity::Unknown], 1);
    assert_eq!(r.worst(), Some(VulnSeverity::Critical));
    let worst = r.worst_n(2);
    assert_eq!(worst[0].id, "CVE-2022-37434");
    assert_eq!(worst[0].fixed.as_deref(), Some("1:1.2.11.dfsg-2+deb11u2"));
    assert_eq!(worst[1].package, "libssl1.1");
    let apt = r
        .vulnerabilities
        .iter()
        .find(|v| v.package == "apt")
        .unwrap();
    assert_eq!(apt.fixed, None, "no FixedVersion: no fix");
    assert!(r.packages_found);

    let clean = parse_trivy(&std::fs::read(fixtures().join("trivy-clean.json")).unwrap()).unwrap();
    assert!(clean.vulnerabilities.is_empty() && clean.packages_found);
    let nothing =
        parse_trivy(&std::fs::read(fixtures().join("trivy-nothing.json")).unwrap()).unwrap();
    assert!(nothing.vulnerabilities.is_empty());
    assert!(!nothing.packages_found, "no Results: nothing was scanned");

    assert!(parse_trivy(br#"{"SchemaVersion": 1}"#).is_err());
    assert!(parse_trivy(b"[]").is_err());
    assert!(parse_trivy(b"Need to update DB").is_err());
}

#[test]
fn grype_reports_read_with_negligible_and_unknown() {
    let r = parse_grype(&std::fs::read(fixtures().join("grype-vulnerable.json")).unwrap()).unwrap();
    assert_eq!(r.vulnerabilities.len(), 4);
    let counts = r.counts();
    assert_eq!(counts[&VulnSeverity::Critical], 1);
    assert_eq!(counts[&VulnSeverity::Negligible], 1);
    assert_eq!(counts[&VulnSeverity::Unknown], 1);
    let go = &r.worst_n(1)[0];
    assert_eq!(
        (go.id.as_str(), go.package.as_str(), go.installed.as_str()),
        ("GHSA-8r3f-844c-mc37", "golang.org/x/net", "v0.7.0")
    );
    assert_eq!(go.fixed.as_deref(), Some("0.17.0"));
    assert_eq!(
        go.link().as_deref(),
        Some("https://github.com/advisories/GHSA-8r3f-844c-mc37")
    );
    let unknown = r
        .vulnerabilities
        .iter()
        .find(|v| v.id == "CVE-2024-99999")
        .unwrap();
    assert_eq!(
        unknown.link().as_deref(),
        Some("https://nvd.nist.gov/vuln/detail/CVE-2024-99999")
    );
    let clean = parse_grype(&std::fs::read(fixtures().join("grype-clean.json")).unwrap()).unwrap();
    assert!(clean.vulnerabilities.is_empty() && clean.packages_found);
    assert!(
        parse_grype(br#"{"source": {}}"#).is_err(),
        "no matches at all"
    );
}

fn scanner(dir: &Path, kind: ScannerKind, timeout: Duration) -> Arc<Scanner> {
    Scanner::new(kind, Some(dir.join("fake-scanner")), None, timeout, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scanner_runs_as_a_child_and_every_failure_is_an_outcome() {
    let dir = stand_in();
    let s = scanner(dir.path(), ScannerKind::Trivy, Duration::from_secs(2));
    let images: Vec<String> = [
        "ghcr.io/acme/api:trivy-vulnerable",
        "ghcr.io/acme/api:trivy-clean",
        "ghcr.io/acme/api:hang",
        "ghcr.io/acme/api:fail",
        "ghcr.io/acme/api:garbage",
        "ghcr.io/acme/api:trivy-vulnerable",
    ]
    .map(String::from)
    .to_vec();
    let started = Instant::now();
    let out = s.scan_all(&images).await;
    // The hanging scanner is killed at its timeout; the others do not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.len(), 5, "each distinct image once");
    assert_eq!(
        report(&out["ghcr.io/acme/api:trivy-vulnerable"])
            .vulnerabilities
            .len(),
        5
    );
    assert!(
        report(&out["ghcr.io/acme/api:trivy-clean"])
            .vulnerabilities
            .is_empty()
    );
    let failed = |image: &str| match &out[image] {
        ScanOutcome::Failed(why) => why.clone(),
        other => panic!("{image}: {other:?}"),
    };
    assert_eq!(
        failed("ghcr.io/acme/api:hang"),
        "trivy did not finish within 2 s"
    );
    let fail = failed("ghcr.io/acme/api:fail");
    assert!(
        fail.starts_with("trivy exited with status 1: ") && fail.contains("connection refused"),
        "{fail}"
    );
    assert!(
        failed("ghcr.io/acme/api:garbage").starts_with("trivy printed no usable report:"),
        "{}",
        failed("ghcr.io/acme/api:garbage")
    );

    // A second review of the same image under the same database: the cache answers.
    let before = scans_logged(dir.path()).len();
    let again = s
        .scan_all(&["ghcr.io/acme/api:trivy-vulnerable".to_string()])
        .await;
    assert!(matches!(
        again.values().next(),
        Some(ScanOutcome::Report(_))
    ));
    assert_eq!(
        scans_logged(dir.path()).len(),
        before,
        "served from the cache"
    );
    // Failures are not cached.
    s.scan_all(&["ghcr.io/acme/api:fail".to_string()]).await;
    assert_eq!(scans_logged(dir.path()).len(), before + 1);

    // Grype gets the image as `registry:` (no container daemon needed).
    let g = scanner(dir.path(), ScannerKind::Grype, Duration::from_secs(5));
    let out = g
        .scan_all(&["ghcr.io/acme/api:grype-vulnerable".to_string()])
        .await;
    assert_eq!(report(out.values().next().unwrap()).scanner, "Grype");

    // No scanner installed at all.
    let missing = Scanner::new(
        ScannerKind::Trivy,
        Some(dir.path().join("no-such-trivy")),
        None,
        Duration::from_secs(5),
        1,
    );
    let out = missing.scan_all(&["nginx:1.27".to_string()]).await;
    match out.values().next().unwrap() {
        ScanOutcome::Failed(why) => assert!(why.contains("is not installed"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_run_at_most_n_at_once_and_trivy_server_mode_is_passed_on() {
    let dir = stand_in();
    let s = Scanner::new(
        ScannerKind::Trivy,
        Some(dir.path().join("fake-scanner")),
        Some("http://trivy.internal:4954".into()),
        Duration::from_secs(10),
        2,
    );
    let images: Vec<String> = (0..6)
        .map(|i| format!("ghcr.io/acme/app{i}:slow"))
        .collect();
    let out = s.scan_all(&images).await;
    assert_eq!(out.len(), 6);
    assert!(out.values().all(|o| matches!(o, ScanOutcome::Report(_))));
    let marks = std::fs::read_to_string(dir.path().join("running.log")).unwrap();
    let (mut now, mut most) = (0i32, 0i32);
    for m in marks.lines() {
        now += if m == "+" { 1 } else { -1 };
        most = most.max(now);
    }
    assert_eq!(most, 2, "{marks}");
    let args = std::fs::read_to_string(dir.path().join("args.log")).unwrap();
    let first = args.lines().next().unwrap();
    assert!(
        first.starts_with("image --format json --quiet --scanners vuln --timeout 10s --server http://trivy.internal:4954 -- ghcr.io/acme/app"),
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_report_is_read() {
    let dir = stand_in();
    // 40 000 findings, about 12 MB: a large image with a bad base.
    let json = crate::common::trivy_report(40_000);
    assert!(json.len() > 10_000_000);
    std::fs::write(dir.path().join("huge.json"), json).unwrap();
    let s = scanner(dir.path(), ScannerKind::Trivy, Duration::from_secs(60));
    let out = s.scan_all(&["ghcr.io/acme/big:huge".to_string()]).await;
    let r = report(out.values().next().unwrap());
    assert_eq!(r.vulnerabilities.len(), 40_000);
    assert_eq!(r.counts()[&VulnSeverity::Critical], 8_000);
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  template:
    spec:
      containers:
        - name: api
          image: \"ghcr.io/acme/api:trivy-vulnerable\"
        - name: sidecar
          image: ghcr.io/acme/api:fail
      initContainers:
        - name: init
          image: ghcr.io/acme/api:trivy-clean
";

#[test]
fn reports_become_findings_on_the_image_line_with_the_threshold_deciding() {
    let dir = stand_in();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s = scanner(dir.path(), ScannerKind::Trivy, Duration::from_secs(5));
    let file = SourceFile::new("deploy/api.yaml", DEPLOYMENT);
    let kinds = kubeharden_core::workloads::WorkloadKinds::builtin().unwrap();
    let images: Vec<String> =
        kubeharden_core::image::uses(std::slice::from_ref(&file), &Default::default(), &kinds)
            .into_iter()
            .map(|u| u.image)
            .collect();
    assert_eq!(images.len(), 3);
    let scans = runtime.block_on(s.scan_all(&images));
    let facts = |scans| Facts {
        images: Arc::new(ImageFacts {
            scans,
            ..Default::default()
        }),
    };
    let registry = Registry::builtin().unwrap();
    let lint = |fail_on: VulnSeverity| {
        let mut settings = Settings::default();
        settings.images.fail_on = fail_on;
        Linter::new(&registry, settings)
            .with_facts(facts(scans.clone()))
            .lint_files(std::slice::from_ref(&file))
    };
    let report = lint(VulnSeverity::High);
    let vulnerable: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "image-vulnerable")
        .collect();
    assert_eq!(vulnerable.len(), 1, "the clean image has none");
    let v = vulnerable[0];
    assert_eq!((v.start.line, v.severity), (10, Severity::Error));
    assert_eq!(v.container.as_deref(), Some("api"));
    assert!(
        v.message
            .contains("1 critical, 1 high, 1 medium, 1 low, 1 unknown, by Trivy")
            && v.message.contains("CVE-2022-37434 in zlib1g"),
        "{}",
        v.message
    );
    let failed: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "image-scan-failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].start.line, failed[0].severity),
        (12, Severity::Warning)
    );
    assert!(failed[0].message.contains("trivy exited with status 1"));
    // Above the worst severity: a note, which does not fail the default threshold.
    let report = lint(VulnSeverity::Critical);
    let v = report
        .findings
        .iter()
        .find(|f| f.rule == "image-vulnerable")
        .unwrap();
    assert_eq!(v.severity, Severity::Error, "critical is at the threshold");
    let below = facts(
        scans
            .iter()
            .filter(|(k, _)| k.contains("vulnerable"))
            .map(|(k, v)| {
                let ScanOutcome::Report(r) = v else {
                    unreachable!()
                };
                let mut r = (**r).clone();
                r.vulnerabilities
                    .retain(|v| v.severity <= VulnSeverity::Medium);
                (k.clone(), ScanOutcome::Report(Arc::new(r)))
            })
            .collect(),
    );
    let report = Linter::new(&registry, Settings::default())
        .with_facts(below)
        .lint_files(std::slice::from_ref(&file));
    let v = report
        .findings
        .iter()
        .find(|f| f.rule == "image-vulnerable")
        .unwrap();
    assert_eq!(v.severity, Severity::Note, "below `high`: a note");
}

#[test]
fn lint_scan_images_on_the_command_line() {
    let dir = stand_in();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("api.yaml"), DEPLOYMENT).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["lint", "--scan-images", "--scanner-path"])
        .arg(dir.path().join("fake-scanner"))
        .arg("api.yaml")
        .current_dir(work.path())
        .env_remove("SCANNER")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "api.yaml:10:11: error [image-vulnerable] ghcr.io/acme/api:trivy-vulnerable has known vulnerabilities (1 critical, 1 high, 1 medium, 1 low, 1 unknown, by Trivy)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("warning [image-scan-failed]"), "{stdout}");
    // Without --scan-images nothing is scanned.
    let before = scans_logged(dir.path()).len();
    let out = Command::new(env!("CARGO_BIN_EXE_kubeharden"))
        .args(["lint", "--scanner-path"])
        .arg(dir.path().join("fake-scanner"))
        .arg("api.yaml")
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("image-vulnerable"));
    assert_eq!(scans_logged(dir.path()).len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_bumping_an_image_to_a_vulnerable_version_hears_about_it_on_that_line() {
    let dir = stand_in();
    // ghcr.io is listed as a host the server may contact, so no DNS lookup leaves the test.
    let h = crate::support::Harness::start_with_images(
        Some(scanner(
            dir.path(),
            ScannerKind::Trivy,
            Duration::from_secs(10),
        )),
        None,
        vec!["ghcr.io".into()],
    )
    .await;
    let repo = crate::support::REPO;
    let config = "images:\n  scan: true\n  fail-on: high\n";
    let before = DEPLOYMENT.replace("trivy-vulnerable", "trivy-clean");
    h.github.commit(
        repo,
        "base1",
        &[
            (".github/kubeharden.yaml", config),
            ("deploy/api.yaml", &before),
        ],
    );
    h.github.commit(
        repo,
        "head1",
        &[
            (".github/kubeharden.yaml", config),
            ("deploy/api.yaml", DEPLOYMENT),
        ],
    );
    h.github.open_pr(repo, 5, "base1", "head1");
    h.deliver(
        "pull_request",
        &crate::support::pull_request_event("opened", 5, "base1", "head1"),
    )
    .await;

    // Only the image the pull request changed was scanned.
    assert_eq!(
        scans_logged(dir.path()),
        ["ghcr.io/acme/api:trivy-vulnerable"]
    );
    let runs = h.github.take_check_runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].conclusion.as_deref(), Some("failure"));
    let annotation = runs[0]
        .annotations
        .iter()
        .find(|a| a["title"] == "KubeHarden [image-vulnerable]")
        .expect("an annotation for the vulnerable image");
    assert_eq!(annotation["start_line"], 10);
    assert_eq!(annotation["annotation_level"], "failure");

    let reviews = h.github.take_reviews();
    assert_eq!(reviews.len(), 1);
    let comment = reviews[0]
        .comments
        .iter()
        .find(|c| c.body.contains("image-vulnerable"))
        .expect("a comment on the image line");
    assert_eq!(
        (comment.path.as_str(), comment.line),
        ("deploy/api.yaml", 10)
    );
    assert!(comment.body.contains("Trivy reports 5 known vulnerabilities in `ghcr.io/acme/api:trivy-vulnerable` (1 critical, 1 high, 1 medium, 1 low, 1 unknown); this fails the check."), "{}", comment.body);
    assert!(
        comment.body.contains("| [CVE-2022-37434](https://avd.aquasec.com/nvd/cve-2022-37434) | critical | `zlib1g` | `1:1.2.11.dfsg-2+deb11u1` | `1:1.2.11.dfsg-2+deb11u2` |"),
        "{}",
        comment.body
    );
    assert!(comment.body.contains("| no fix yet |"), "{}", comment.body);
}
