//! Presence end to end: an event written at Google → the phone system gets `profile.changed`
//! at the start and `null` at the end, on gwsync's clock.
mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const SECRET_KEY: [u8; 24] = *b"0123456789abcdefghijklmn";

#[tokio::test]
async fn an_event_switches_the_profile_at_its_start_and_back_at_its_end() {
    let app = TestApp::start().await;
    let receiver = fake_google_receiver().await;
    app.setup_tenant().await;
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SECRET_KEY));
    let r = app
        .api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN, "directory_admin": IT, "phone_system": {"url": receiver.url, "secret": secret}})))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app
        .put_user(ALICE, json!({"external_id": "1042", "profiles": [{"name": "Lunch", "triggers": ["lunch"]}]}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let writer = writer_token(&app, ALICE).await;
    let start = app.clock.now() + chrono::Duration::minutes(10);
    let end = start + chrono::Duration::minutes(30);
    let r = reply(
        app.http
            .post(format!("{}/calendar/v3/calendars/primary/events", app.fake.base_url()))
            .bearer_auth(&writer)
            .json(&json!({"summary": "Lunch with a customer", "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    // Wait for the presence API to show it coming.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/presence"), None).await;
        if p.body["upcoming"].as_array().is_some_and(|u| u.iter().any(|t| t["profile"] == "Lunch")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{p:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = receiver.count();
    app.advance("10m").await;
    let got = receiver.wait_for(before + 1).await;
    let last: Value = serde_json::from_slice(&got.last().unwrap().body).unwrap();
    assert_eq!(last["profile"], "Lunch", "{last}");
    app.advance("30m").await;
    let got = receiver.wait_for(before + 2).await;
    let last: Value = serde_json::from_slice(&got.last().unwrap().body).unwrap();
    assert_eq!(last["profile"], Value::Null, "{last}");
    app.stop().await;
}

/// A receiver that records what it gets and answers 200.
async fn fake_google_receiver() -> Receiver {
    Receiver::start().await
}

pub use receiver::Receiver;
mod receiver {
    use std::sync::Arc;
    use std::time::Duration;

    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use parking_lot::Mutex;

    #[derive(Clone, Debug)]
    pub struct Got {
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    pub struct Receiver {
        pub url: String,
        got: Arc<Mutex<Vec<Got>>>,
    }

    impl Receiver {
        pub async fn start() -> Receiver {
            let got: Arc<Mutex<Vec<Got>>> = Arc::default();
            let g = got.clone();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = HttpServer::new(move || {
                let g = g.clone();
                App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                    let g = g.clone();
                    async move {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        g.lock().push(Got { headers, body: body.to_vec() });
                        HttpResponse::NoContent().finish()
                    }
                }))
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            tokio::spawn(server);
            Receiver { url: format!("http://{addr}/hook"), got }
        }

        pub fn count(&self) -> usize {
            self.got.lock().len()
        }

        pub async fn wait_for(&self, n: usize) -> Vec<Got> {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.count() < n {
                assert!(tokio::time::Instant::now() < deadline, "expected {n} deliveries, got {:?}", self.got.lock());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.got.lock().clone()
        }
    }
}
