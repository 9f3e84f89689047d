//! A landing folder on an object store (`s3://bucket/prefix`, `gs://`,
//! `az://` / `abfss://`, `http(s)://` WebDAV) through `object_store`.
//!
//! Objects are listed under the prefix; a new object is taken like a local
//! file (its size and last-modified time recorded in the manifest), then
//! **staged**: streamed to the source's state folder, read there by the
//! same fast readers as a local file (byte ranges, row groups), and removed
//! once every slice is committed. Only the file being read is staged, so the
//! disk and memory bound is one object, whatever the backfill.
//!
//! Credentials and endpoints: the `AWS_*`, `GOOGLE_*` and `AZURE_*`
//! environment variables, then `storage_options` of the source (the keys of
//! `object_store`'s builders, e.g. `aws_endpoint`, `aws_region`,
//! `aws_access_key_id`, `aws_secret_access_key`, `aws_allow_http`);
//! an unknown key is a configuration error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::config::Format;

/// A watched object-store prefix.
#[derive(Debug, Clone)]
pub struct RemotePrefix {
    /// As configured (shown in status and errors).
    pub url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
}

/// Why an object could not be listed or staged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object is gone (deleted after it was listed).
    #[error("{0}: the object is no longer there")]
    Gone(String),
    /// The object is not what was listed (rewritten since).
    #[error("{0}")]
    Changed(String),
    /// Network, credentials, the store: worth trying again.
    #[error("{0}")]
    Store(String),
    /// The object is not a readable Parquet file.
    #[error("{0}")]
    Format(String),
}

/// Object-store keys a scheme's builder takes (for a clear error on typos).
fn check_key(scheme: &ObjectStoreScheme, key: &str) -> Result<(), String> {
    let k = key.to_ascii_lowercase();
    let ok = match *scheme {
        ObjectStoreScheme::AmazonS3 => k.parse::<object_store::aws::AmazonS3ConfigKey>().is_ok(),
        ObjectStoreScheme::GoogleCloudStorage => {
            k.parse::<object_store::gcp::GoogleConfigKey>().is_ok()
        }
        ObjectStoreScheme::MicrosoftAzure => {
            k.parse::<object_store::azure::AzureConfigKey>().is_ok()
        }
        ObjectStoreScheme::Http => k.parse::<object_store::ClientConfigKey>().is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not an option of this store (see object_store's {} keys)",
            match scheme {
                ObjectStoreScheme::AmazonS3 => "AmazonS3ConfigKey",
                ObjectStoreScheme::GoogleCloudStorage => "GoogleConfigKey",
                ObjectStoreScheme::MicrosoftAzure => "AzureConfigKey",
                _ => "ClientConfigKey",
            }
        ))
    }
}

impl RemotePrefix {
    /// The store for `url` with the environment's credentials and `options`
    /// (which win). Nothing is contacted yet.
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<RemotePrefix, String> {
        let parsed = Url::parse(url).map_err(|e| format!("`{url}`: not a URL: {e}"))?;
        let (scheme, _) = ObjectStoreScheme::parse(&parsed).map_err(|e| {
            format!(
                "`{url}`: not an object store URL (s3://, gs://, az://, abfss://, https://): {e}"
            )
        })?;
        if matches!(scheme, ObjectStoreScheme::Local | ObjectStoreScheme::Memory) {
            return Err(format!(
                "`{url}`: a local folder is watched by its path, not through the object store"
            ));
        }
        let env_prefix = match scheme {
            ObjectStoreScheme::AmazonS3 => "AWS_",
            ObjectStoreScheme::GoogleCloudStorage => "GOOGLE_",
            ObjectStoreScheme::MicrosoftAzure => "AZURE_",
            _ => "\0",
        };
        let mut opts: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(env_prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| check_key(&scheme, k).is_ok())
            .collect();
        for (k, v) in options {
            check_key(&scheme, k)?;
            opts.insert(k.to_ascii_lowercase(), v.clone());
        }
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, opts).map_err(|e| format!("`{url}`: {e}"))?;
        Ok(RemotePrefix {
            url: url.to_string(),
            store: Arc::from(store),
            prefix,
        })
    }

    fn location(&self, name: &str) -> ObjectPath {
        let mut p = self.prefix.clone();
        for part in name.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    /// Objects under the prefix that `format` takes, skipping names being
    /// written or hidden: (name relative to the prefix, size, last modified ms).
    pub async fn list(
        &self,
        format: Format,
        skipped: fn(&str) -> bool,
    ) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&self.prefix));
        let base: Vec<_> = self.prefix.parts().collect();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| StoreError::Store(format!("{}: {e}", self.url)))?;
            let parts: Vec<_> = meta.location.parts().collect();
            if parts.len() <= base.len() || parts[..base.len()] != base[..] {
                continue;
            }
            let rel = parts[base.len()..]
                .iter()
                .map(|p| p.as_ref())
                .collect::<Vec<_>>()
                .join("/");
            let file = rel.rsplit('/').next().unwrap_or(&rel);
            if skipped(&rel) || format.of(file).is_none() {
                continue;
            }
            out.push((rel, meta.size, meta.last_modified.timestamp_millis()));
        }
        out.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
        Ok(out)
    }

    /// Row groups of a Parquet object, from its footer (two range reads).
    pub async fn parquet_row_groups(&self, name: &str, size: u64) -> Result<usize, StoreError> {
        let loc = self.location(name);
        let shown = format!("{}/{name}", self.url.trim_end_matches('/'));
        if size < 12 {
            return Err(StoreError::Format(format!(
                "{shown}: not a Parquet file ({size} bytes)"
            )));
        }
        let tail = self
            .store
            .get_range(&loc, size - 8..size)
            .await
            .map_err(|e| self.error(&shown, e))?;
        if &tail[4..8] != b"PAR1" {
            return Err(StoreError::Format(format!(
                "{shown}: not a Parquet file (no PAR1 footer)"
            )));
        }
        let len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
        if len + 12 > size {
            return Err(StoreError::Format(format!(
                "{shown}: Parquet footer of {len} bytes in a {size}-byte file"
            )));
        }
        let footer = self
            .store
            .get_range(&loc, size - 8 - len..size - 8)
            .await
            .map_err(|e| self.error(&shown, e))?;
        let md =
            deltalake::parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&footer)
                .map_err(|e| {
                    StoreError::Format(format!("{shown}: not a readable Parquet file: {e}"))
                })?;
        Ok(md.num_row_groups())
    }

    fn error(&self, shown: &str, e: object_store::Error) -> StoreError {
        match e {
            object_store::Error::NotFound { .. } => StoreError::Gone(shown.to_string()),
            e => StoreError::Store(format!("{shown}: {e}")),
        }
    }

    /// Stream object `name` to `dest` (written beside it, then renamed), and
    /// check it is still the `size` bytes that were listed.
    pub async fn stage(&self, name: &str, size: u64, dest: &Path) -> Result<(), StoreError> {
        let shown = format!("{}/{name}", self.url.trim_end_matches('/'));
        let local = |e: std::io::Error| StoreError::Store(format!("{}: {e}", dest.display()));
        if let Some(d) = dest.parent() {
            tokio::fs::create_dir_all(d).await.map_err(local)?;
        }
        let tmp = dest.with_extension("staging");
        let got = self
            .store
            .get(&self.location(name))
            .await
            .map_err(|e| self.error(&shown, e))?;
        if got.meta.size != size {
            return Err(StoreError::Changed(format!(
                "{shown}: rewritten after it was taken ({} bytes listed, {} now); not read (drop a new object instead)",
                size, got.meta.size
            )));
        }
        let mut file = tokio::fs::File::create(&tmp).await.map_err(local)?;
        let mut stream = got.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StoreError::Store(format!("{shown}: {e}")))?;
            written += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(local)?;
        }
        file.sync_all().await.map_err(local)?;
        drop(file);
        if written != size {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(StoreError::Store(format!(
                "{shown}: {written} of {size} bytes received"
            )));
        }
        tokio::fs::rename(&tmp, dest).await.map_err(local)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_by_scheme() {
        let mut o = BTreeMap::new();
        o.insert("aws_endpoint".to_string(), "http://127.0.0.1:9".to_string());
        o.insert("aws_allow_http".to_string(), "true".to_string());
        o.insert("aws_region".to_string(), "us-east-1".to_string());
        let r = RemotePrefix::open("s3://bucket/landing/hist", &o).unwrap();
        assert_eq!(r.prefix.as_ref(), "landing/hist");
        assert_eq!(
            r.location("2026/a.jsonl").as_ref(),
            "landing/hist/2026/a.jsonl"
        );
        o.insert("aws_endpiont".to_string(), "x".to_string());
        let e = RemotePrefix::open("s3://bucket/landing", &o).unwrap_err();
        assert!(e.contains("`aws_endpiont` is not an option"), "{e}");
        let e = RemotePrefix::open("memory:///x", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("local folder"), "{e}");
        let e = RemotePrefix::open("ftp://host/x", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("not an object store URL"), "{e}");
    }
}
