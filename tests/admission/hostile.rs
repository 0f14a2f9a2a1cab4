//! Hostile input: each gets a clear error or the configured answer within bounded time, and
//! the server keeps answering.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::support::{TestServer, bare_pod, review};

async fn still_answers(server: &TestServer) {
    let mut client = server.client().await;
    let r = client
        .review(
            "/validate/enforce/nsa",
            &review("CREATE", &bare_pod("after"), None),
        )
        .await;
    assert_eq!(r["allowed"], false);
}

#[tokio::test]
async fn malformed_bodies_get_a_clear_400() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    for (body, says) in [
        (&b"{not json"[..], "not an AdmissionReview"),
        (&b"[]"[..], "not an AdmissionReview"),
        (&br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}"#[..], "expected apiVersion admission.k8s.io/v1"),
        (&br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#[..], "has no request"),
    ] {
        let (status, text) = client.request("POST", "/validate/enforce/nsa", body.to_vec()).await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&text).contains(says), "{text:?}");
    }
    let (status, text) = client
        .request("POST", "/validate/enforce/strict", b"{}".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&text).contains("unknown profile"));
    let (status, _) = client
        .request("POST", "/validate/deny/nsa", b"{}".to_vec())
        .await;
    assert_eq!(status, 400);
    still_answers(&server).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let mut pod = bare_pod("big");
    pod["metadata"]["annotations"] =
        json!({"filler": "x".repeat(kubeharden::admission::BODY_LIMIT)});
    let body = serde_json::to_vec(&review("CREATE", &pod, None)).unwrap();
    let (status, _) = client.request("POST", "/validate/enforce/nsa", body).await;
    assert_eq!(status, 413);
    still_answers(&server).await;
}

#[tokio::test]
async fn an_unknown_kind_is_allowed_unjudged() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}, "data": {"k": "v"}});
    let r = client
        .review(
            "/validate/enforce/nsa",
            &review("CREATE", &config_map, None),
        )
        .await;
    assert_eq!(r["allowed"], true);
    // A kind the linter does not know, with a pod template, is judged like a Deployment.
    let rollout = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r", "namespace": "a"},
        "spec": {"template": {"spec": bare_pod("x")["spec"].clone()}}});
    let r = client
        .review("/validate/enforce/nsa", &review("CREATE", &rollout, None))
        .await;
    assert_eq!(r["allowed"], false);
}

#[tokio::test]
async fn deep_nesting_is_refused_before_any_decision() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    // Built as text: a `Value` that deep would overflow the test's own stack when dropped.
    let mut pod = bare_pod("deep");
    pod["spec"]["containers"][0]["env"] = json!("DEEP");
    let text = serde_json::to_string(&review("CREATE", &pod, None))
        .unwrap()
        .replace(
            "\"DEEP\"",
            &format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        );
    let started = Instant::now();
    let (status, body) = client
        .request("POST", "/validate/enforce/nsa", text.into_bytes())
        .await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("recursion limit"),
        "{body:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    still_answers(&server).await;
}

#[tokio::test]
async fn a_pod_of_100000_containers_is_answered_in_bounded_time() {
    let server = TestServer::start(None).await;
    let mut client = server.client().await;
    let containers: Vec<Value> = (0..100_000)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox:1"}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "many", "namespace": "a"},
        "spec": {"containers": containers}});
    let request = review("CREATE", &pod, None);
    assert!(serde_json::to_vec(&request).unwrap().len() < kubeharden::admission::BODY_LIMIT);
    let started = Instant::now();
    let r = client
        .review("/validate/enforce/restricted", &request)
        .await;
    let took = started.elapsed();
    assert_eq!(r["allowed"], false);
    let message = r["status"]["message"].as_str().unwrap();
    // Every container has findings; the denial lists the first 50 and counts the rest.
    assert!(
        message.len() < 64 * 1024,
        "a denial of {} bytes",
        message.len()
    );
    assert!(message.contains("container \"c0\""), "{}", &message[..500]);
    assert!(
        message.contains("more; run `kubeharden lint`"),
        "{}",
        &message[..500]
    );
    // Linear in the containers: a debug build takes some 20 s here, a release build (the
    // bench) a fraction of that.
    eprintln!("100 000 containers: decided in {took:?}");
    assert!(took < Duration::from_secs(90), "{took:?}");
    still_answers(&server).await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_off() {
    let server = TestServer::start(None).await;
    let started = Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Half a ClientHello, then silence.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let mut sink = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        loop {
            match stalled.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a stalled handshake open");
    // The handshake deadline of the test server is 500 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    still_answers(&server).await;
}
