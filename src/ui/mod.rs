//! The twin browser: a single-page web UI served by the binary itself.
//!
//! Its files (`src/ui/static/`) are compiled in, so a fresh machine needs no
//! Node.js and no files next to the binary. The UI reads only the public
//! REST API and the live stream (`GET /api/stream`); it has no private
//! endpoints. Pages are addressed by the URL fragment (`/#/machine/mill-a1`)
//! so every page can be bookmarked and shared.

use actix_web::http::header;
use actix_web::middleware::Compress;
use actix_web::{web, HttpRequest, HttpResponse};

/// One embedded file.
struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! embed {
    ($path:literal, $mime:literal) => {
        Asset {
            path: $path,
            mime: $mime,
            body: include_bytes!(concat!("static/", $path)),
        }
    };
}

static FILES: &[Asset] = &[
    embed!("index.html", "text/html; charset=utf-8"),
    embed!("app.css", "text/css; charset=utf-8"),
    embed!("app.js", "text/javascript; charset=utf-8"),
    embed!("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    embed!("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    embed!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
    embed!("favicon.svg", "image/svg+xml"),
];

/// Content tag of the embedded files (they change only with the binary).
fn etag(a: &Asset) -> String {
    format!("\"{:08x}\"", crc32fast::hash(a.body))
}

fn serve(req: &HttpRequest, path: &str) -> HttpResponse {
    let Some(a) = FILES.iter().find(|f| f.path == path) else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body(format!("no UI file `{path}`"));
    };
    let tag = etag(a);
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut r = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    r.insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-content-type-options", "nosniff"));
    if matches {
        return r.finish();
    }
    if a.mime.starts_with("text/html") {
        r.insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ));
    }
    r.content_type(a.mime).body(a.body)
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

async fn file(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    serve(&req, &path)
}

/// `/` (the browser) and `/ui/{file}` (its scripts and styles).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index)).service(
        web::scope("/ui")
            .wrap(Compress::default())
            .route("/{path:.*}", web::get().to(file)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_embedded() {
        let html = std::str::from_utf8(FILES[0].body).unwrap();
        for part in html.split("/ui/").skip(1) {
            let path = part.split('"').next().unwrap();
            assert!(
                FILES.iter().any(|f| f.path == path),
                "index.html loads /ui/{path}, which is not embedded"
            );
        }
    }
}
