//! Render roots found from a repository's files: charts and their variants, kustomizations and
//! what they load, and what would need the network.

use std::collections::BTreeMap;
use std::path::Path;

use kubeharden_core::roots::{self, Repo, Root, RootKind};

fn discover(files: &[(&str, &str)]) -> Vec<Root> {
    let map: BTreeMap<String, String> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    let read = |p: &str| map.get(p).cloned();
    roots::discover(&Repo::new(map.keys().cloned(), &read))
}

fn names(root: &Root) -> Vec<&str> {
    root.variants.iter().map(|v| v.name.as_str()).collect()
}

#[test]
fn a_chart_has_its_default_values_or_else_each_chart_testing_values_file() {
    let roots = discover(&[
        (
            "web/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        ),
        ("web/values.yaml", "image: nginx\n"),
        ("web/templates/deployment.yaml", "kind: Deployment\n"),
        (
            "db/Chart.yaml",
            "apiVersion: v2\nname: db\nversion: 1.0.0\n",
        ),
        ("db/values.yaml", "{}\n"),
        ("db/ci/tls-values.yaml", "tls: true\n"),
        ("db/ci/plain-values.yaml", "tls: false\n"),
        ("db/ci/README.md", "not values\n"),
    ]);
    assert_eq!(roots.len(), 2);
    let db = &roots[0];
    assert_eq!(
        (db.kind, db.dir.as_str(), db.file.as_str()),
        (RootKind::Helm, "db", "db/Chart.yaml")
    );
    assert_eq!(names(db), ["ci/plain-values.yaml", "ci/tls-values.yaml"]);
    assert_eq!(db.variants[1].values_files, ["db/ci/tls-values.yaml"]);
    let web = &roots[1];
    assert_eq!(names(web), ["values.yaml"]);
    assert_eq!(web.variants[0].release, "web");
    assert!(web.loads.contains("web/templates/deployment.yaml"));
    assert!(web.blocked.is_empty() && web.problems.is_empty());
}

#[test]
fn argo_cd_and_flux_deployments_of_a_chart_are_variants_with_their_values() {
    let roots = discover(&[
        (
            "charts/web/Chart.yaml",
            "apiVersion: v2\nname: web\nversion: 1.0.0\n",
        ),
        ("charts/web/values.yaml", "replicas: 1\n"),
        ("charts/web/prod-values.yaml", "replicas: 3\n"),
        (
            "apps/web.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: web-prod}\nspec:\n  destination: {namespace: prod}\n  source:\n    repoURL: https://github.com/acme/gitops\n    path: ./charts/web/\n    helm:\n      releaseName: web\n      valueFiles: [prod-values.yaml, $values/other.yaml]\n      valuesObject:\n        securityContext:\n          runAsNonRoot: true\n",
        ),
        (
            "flux/web.yaml",
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: web, namespace: apps}\nspec:\n  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef: {kind: GitRepository, name: gitops}\n  values:\n    replicas: 2\n",
        ),
        (
            "apps/other.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: x}\nspec:\n  source: {path: charts/missing}\n",
        ),
    ]);
    assert_eq!(roots.len(), 1);
    let web = &roots[0];
    assert_eq!(
        names(web),
        ["values.yaml", "apps/web.yaml", "flux/web.yaml"]
    );
    let argo = &web.variants[1];
    assert_eq!(argo.values_files, ["charts/web/prod-values.yaml"]);
    assert_eq!(
        argo.inline_values.as_deref(),
        Some(r#"{"securityContext":{"runAsNonRoot":true}}"#)
    );
    assert_eq!(
        (argo.release.as_str(), argo.namespace.as_deref()),
        ("web", Some("prod"))
    );
    let flux = &web.variants[2];
    assert_eq!(flux.inline_values.as_deref(), Some(r#"{"replicas":2}"#));
    assert_eq!(flux.namespace.as_deref(), Some("apps"));
}

#[test]
fn a_dependency_not_vendored_is_blocked_and_a_vendored_one_is_not() {
    let roots = discover(&[
        (
            "app/Chart.yaml",
            "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - name: redis\n    version: 18.x\n    repository: https://charts.bitnami.com/bitnami\n  - name: common\n    version: 2.x\n  - name: lib\n    version: 1.x\n",
        ),
        ("app/charts/common-2.1.0.tgz", ""),
        (
            "app/charts/lib/Chart.yaml",
            "apiVersion: v2\nname: lib\nversion: 1.0.0\n",
        ),
    ]);
    // The vendored subchart renders through its parent, not on its own.
    assert_eq!(roots.len(), 1);
    let blocked = &roots[0].blocked;
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    assert_eq!(blocked[0].path, "app/Chart.yaml");
    assert!(
        blocked[0]
            .message
            .contains("`redis` (https://charts.bitnami.com/bitnami)")
    );
}

#[test]
fn a_kustomization_loads_its_files_and_bases_transitively_and_bases_and_components_are_not_roots() {
    let roots = discover(&[
        (
            "base/kustomization.yaml",
            "resources: [deploy.yaml, svc.yaml]\n",
        ),
        ("base/deploy.yaml", "kind: Deployment\n"),
        ("base/svc.yaml", "kind: Service\n"),
        (
            "comp/kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n  - path: sc.yaml\n",
        ),
        ("comp/sc.yaml", "kind: Deployment\n"),
        (
            "overlays/prod/kustomization.yml",
            "resources:\n  - ../../base\ncomponents: [../../comp]\npatches:\n  - path: replicas.yaml\n  - patch: |-\n      - op: add\n        path: /x\n    target: {kind: Deployment}\nconfigMapGenerator:\n  - name: cfg\n    files: [app.properties, key=other.txt]\n    envs: [env.txt]\nimages:\n  - name: nginx\n    newTag: '1.27'\n",
        ),
        ("overlays/prod/replicas.yaml", "kind: Deployment\n"),
        ("overlays/prod/app.properties", "a=b\n"),
        ("overlays/prod/other.txt", "x\n"),
        ("overlays/prod/env.txt", "A=1\n"),
        ("overlays/prod/unused.yaml", "kind: Deployment\n"),
    ]);
    let dirs: Vec<&str> = roots.iter().map(|r| r.dir.as_str()).collect();
    // The base renders through the overlay that loads it, not on its own.
    assert_eq!(dirs, ["overlays/prod"]);
    let prod = &roots[0];
    assert_eq!(prod.kind, RootKind::Kustomize);
    assert_eq!(prod.file, "overlays/prod/kustomization.yml");
    let loads: Vec<&str> = prod.loads.iter().map(String::as_str).collect();
    assert_eq!(
        loads,
        [
            "base/deploy.yaml",
            "base/kustomization.yaml",
            "base/svc.yaml",
            "comp/kustomization.yaml",
            "comp/sc.yaml",
            "overlays/prod/app.properties",
            "overlays/prod/env.txt",
            "overlays/prod/kustomization.yml",
            "overlays/prod/other.txt",
            "overlays/prod/replicas.yaml",
        ]
    );
    assert!(prod.blocked.is_empty() && prod.problems.is_empty());
}

/// Roots that load a common file are one group (their fixes are planned and confirmed
/// together); a root that shares nothing is a group of its own.
#[test]
fn roots_that_share_a_file_are_grouped_and_others_stand_alone() {
    let roots = discover(&[
        ("base/kustomization.yaml", "resources: [deploy.yaml]\n"),
        ("base/deploy.yaml", "kind: Deployment\n"),
        ("lib/kustomization.yaml", "resources: [cm.yaml]\n"),
        ("lib/cm.yaml", "kind: ConfigMap\n"),
        ("prod/kustomization.yaml", "resources: [../base]\n"),
        // Shares nothing with prod directly, only through `lib` with `dev`.
        ("qa/kustomization.yaml", "resources: [../lib]\n"),
        ("dev/kustomization.yaml", "resources: [../base, ../lib]\n"),
        ("alone/kustomization.yaml", "resources: [pod.yaml]\n"),
        ("alone/pod.yaml", "kind: Pod\n"),
        (
            "chart/Chart.yaml",
            "apiVersion: v2\nname: c\nversion: 1.0.0\n",
        ),
        ("chart/values.yaml", "a: 1\n"),
    ]);
    let dirs: Vec<&str> = roots.iter().map(|r| r.dir.as_str()).collect();
    assert_eq!(dirs, ["alone", "chart", "dev", "prod", "qa"]);
    let groups: Vec<Vec<&str>> = roots::groups(&roots)
        .into_iter()
        .map(|g| g.into_iter().map(|i| dirs[i]).collect())
        .collect();
    assert_eq!(
        groups,
        [vec!["alone"], vec!["chart"], vec!["dev", "prod", "qa"]]
    );
}

#[test]
fn remote_resources_and_helm_charts_are_blocked_at_their_line_and_paths_out_are_problems() {
    let text = "resources:\n  - deploy.yaml\n  - https://github.com/acme/base//deploy?ref=v1\n  - github.com/acme/other/base?ref=main\n  - ../../../../etc\nhelmCharts:\n  - name: redis\n";
    let roots = discover(&[
        ("k/kustomization.yaml", text),
        ("k/deploy.yaml", "kind: Pod\n"),
    ]);
    let root = &roots[0];
    let at: Vec<(&str, &str)> = root
        .blocked
        .iter()
        .map(|b| (&text[b.range.start()..b.range.end()], b.message.as_str()))
        .collect();
    assert_eq!(at.len(), 3, "{at:?}");
    assert_eq!(at[0].0, "https://github.com/acme/base//deploy?ref=v1");
    assert!(
        at[0]
            .1
            .contains("remote `https://github.com/acme/base//deploy?ref=v1`")
    );
    assert_eq!(at[1].0, "github.com/acme/other/base?ref=main");
    assert_eq!(at[2].0, "helmCharts");
    assert_eq!(root.problems.len(), 1);
    assert!(root.problems[0].message.contains("outside the repository"));
}

#[test]
fn is_remote_tells_urls_and_host_paths_from_local_paths() {
    for remote in [
        "https://github.com/a/b",
        "git@github.com:a/b.git",
        "github.com/a/b/base?ref=v1",
        "gitlab.com/a/b",
    ] {
        assert!(roots::is_remote(remote), "{remote}");
    }
    for local in [
        "../base",
        "deploy.yaml",
        "config.d/x.yaml",
        "./a.b/c",
        "v1.2/x",
    ] {
        assert!(!roots::is_remote(local), "{local}");
    }
}

/// Opt-in: `KUBEHARDEN_GITOPS` names `../shared/gitops`; every chart and kustomization of its
/// `INDEX.tsv` is found, components as non-roots.
#[test]
fn the_shared_gitops_trees_have_the_roots_their_index_lists() {
    let Some(dir) = std::env::var_os("KUBEHARDEN_GITOPS") else {
        eprintln!("KUBEHARDEN_GITOPS not set; skipped");
        return;
    };
    let dir = Path::new(&dir);
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let mut by_repo: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        by_repo
            .entry(cols[0].replace('/', "+"))
            .or_default()
            .push((cols[2].to_string(), cols[3].to_string()));
    }
    let mut charts = 0;
    let mut kustomizations = 0;
    let mut bases = 0;
    for (repo, expected) in by_repo {
        let top = dir.join(&repo);
        let mut paths = Vec::new();
        walk(&top, &top, &mut paths);
        let read = |p: &str| std::fs::read_to_string(top.join(p)).ok();
        let found = roots::discover(&Repo::new(paths, &read));
        for (path, kind) in expected {
            let root = found.iter().find(|r| r.dir == path);
            let is_component = std::fs::read_to_string(top.join(&path).join("kustomization.yaml"))
                .is_ok_and(|t| t.contains("kind: Component"));
            // A base that an overlay loads renders through that overlay, not as a root.
            let is_base = found.iter().any(|r| {
                r.loads
                    .iter()
                    .any(|f| roots::parent(f) == path && *f != r.file)
            });
            match (kind.as_str(), root) {
                ("helm-chart", Some(r)) => {
                    assert_eq!(r.kind, RootKind::Helm);
                    assert!(r.blocked.is_empty(), "{path}: {:?}", r.blocked);
                    charts += 1;
                }
                ("kustomization", None) if is_component || is_base => {
                    bases += usize::from(!is_component)
                }
                ("kustomization", Some(r)) if !is_component => {
                    assert_eq!(r.kind, RootKind::Kustomize);
                    assert!(r.problems.is_empty(), "{path}: {:?}", r.problems);
                    kustomizations += 1;
                }
                _ => panic!("{repo}/{path} ({kind}): found {root:?}"),
            }
        }
    }
    // INDEX.tsv lists 43 kustomizations; 15 of them are `kind: Component` (the gitops README
    // says 10), which leaves 28: 13 bases that render through their overlays, and 15 roots.
    assert_eq!((charts, kustomizations, bases), (12, 15, 13));
}

fn walk(top: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            walk(top, &path, out);
        } else {
            out.push(
                path.strip_prefix(top)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}
