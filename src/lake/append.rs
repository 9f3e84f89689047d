//! Appends that say what they hold: one commit per call, carrying an
//! application transaction (`txn { appId, version }`) with the rows, for
//! writers outside the batching [`super::writer`] (the landing folder's
//! slices). A caller asks [`MarkedTable::marker`] what the table already
//! holds and appends only above it, so a slice is never written twice.
//!
//! Tables of the contract are created with their schema and partitions;
//! other tables (`bronze.landing_<source>`, `bronze.<table>`) take the
//! columns of their first rows and gain the new ones later (schema merge).

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;

use super::writer::committed_marker;
use super::{LakeError, Lakehouse, Table, TableName};

/// A table appended to with markers, kept open between appends.
pub struct MarkedTable {
    name: TableName,
    table: Option<DeltaTable>,
}

impl MarkedTable {
    /// A handle on `name` (opened on first use).
    pub fn new(name: TableName) -> Self {
        MarkedTable { name, table: None }
    }

    /// The table's name.
    pub fn name(&self) -> &TableName {
        &self.name
    }

    fn open_err(&self, source: deltalake::DeltaTableError) -> LakeError {
        LakeError::Open {
            table: self.name.to_string(),
            source,
        }
    }

    async fn open(&mut self, lake: &Lakehouse) -> Result<&mut DeltaTable, LakeError> {
        if self.table.is_none() {
            let t = match Table::from_table_name(&self.name) {
                Some(t) => lake.open_or_create(t).await?,
                None => {
                    let url = lake.url_of(&self.name);
                    let local = url.to_file_path().ok();
                    if let Some(p) = &local {
                        std::fs::create_dir_all(p).map_err(|e| LakeError::Root {
                            root: p.display().to_string(),
                            message: format!("cannot create table directory: {e}"),
                        })?;
                    }
                    let exists = local.is_none_or(|p| p.join("_delta_log").is_dir());
                    if exists {
                        DeltaTable::try_from_url(url)
                            .await
                            .map_err(|e| self.open_err(e))?
                    } else {
                        deltalake::DeltaTableBuilder::from_url(url)
                            .and_then(|b| b.build())
                            .map_err(|e| self.open_err(e))?
                    }
                }
            };
            self.table = Some(t);
        }
        Ok(self.table.as_mut().expect("opened above"))
    }

    /// The version of `app`'s marker in the table (none: no table or no marker).
    pub async fn marker(&mut self, lake: &Lakehouse, app: &str) -> Result<Option<u64>, LakeError> {
        let name = self.name.to_string();
        let t = self.open(lake).await?;
        if t.version().is_some() {
            t.update_state().await.map_err(|source| LakeError::Open {
                table: name.clone(),
                source,
            })?;
        }
        committed_marker(t, app)
            .await
            .map_err(|source| LakeError::Open {
                table: name,
                source,
            })
    }

    /// Append `batches` in one commit with the marker `app` = `version`.
    /// A commit that reports an error after it landed (a failed checkpoint)
    /// is recognised by its marker and counts as done.
    pub async fn append(
        &mut self,
        lake: &Lakehouse,
        batches: Vec<RecordBatch>,
        app: &str,
        version: u64,
    ) -> Result<(), LakeError> {
        let name = self.name.to_string();
        let contract = Table::from_table_name(&self.name).is_some();
        let t = self.open(lake).await?.clone();
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let props = CommitProperties::default()
            .with_application_transactions(vec![Transaction::new(app, version as i64)]);
        let mut w = t
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props);
        if !contract {
            w = w.with_schema_mode(SchemaMode::Merge);
        }
        match w.await {
            Ok(t) => {
                self.table = Some(t);
                Ok(())
            }
            Err(e) => {
                self.table = None;
                if self.marker(lake, app).await.ok().flatten() >= Some(version) {
                    tracing::warn!(table = %name, error = %e, "commit landed but a post-commit step failed; not retrying");
                    return Ok(());
                }
                Err(LakeError::Open {
                    table: name,
                    source: e,
                })
            }
        }
    }
}
