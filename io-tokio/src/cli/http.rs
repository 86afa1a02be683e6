//! The operator's status page on tokio: axum serves the shared
//! [`HttpApp`] (`tryst_std::observe`), which holds every route, the login,
//! the cookie and CSRF rules and the HTML. This adapter only turns an
//! axum request into the shared plain request (the body bounded by
//! [`MAX_BODY`]) and the app's answer back, calling the app off the
//! reactor (it waits for the roles' loops).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use tryst_std::observe::http::{
    HttpApp, HttpListener, HttpRequest, HttpResponse, MAX_BODY, MAX_HEADERS,
};

/// Serves `app` on `addr` on `runtime` until the listener is dropped.
pub fn serve(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    app: Arc<dyn HttpApp>,
) -> io::Result<HttpListener> {
    let listener = runtime.block_on(tokio::net::TcpListener::bind(addr))?;
    let bound = listener.local_addr()?;
    let router = axum::Router::new().fallback(move |req: Request| {
        let app = Arc::clone(&app);
        async move { answer(app, req).await }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "the status page stopped");
        }
    });
    Ok(HttpListener::new(bound, move || {
        let _ = stop.send(());
    }))
}

/// One request through the shared app.
async fn answer(app: Arc<dyn HttpApp>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return into_response(HttpResponse::text(413, "request body too large"));
    };
    let mut plain = HttpRequest {
        method: parts.method.as_str().to_ascii_uppercase(),
        ..HttpRequest::default()
    };
    plain.set_target(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    plain.headers = parts
        .headers
        .iter()
        .take(MAX_HEADERS)
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    plain.body = body.to_vec();
    let response = tokio::task::spawn_blocking(move || app.handle(plain))
        .await
        .unwrap_or_else(|_| HttpResponse::text(500, "internal error"));
    into_response(response)
}

fn into_response(r: HttpResponse) -> Response {
    let mut builder = Response::builder().status(r.status);
    for (name, value) in &r.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(Body::from(r.body)).unwrap_or_else(|_| {
        let mut fallback = Response::new(Body::from("internal error"));
        *fallback.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}
