//! ironlake: an industrial digital-twin platform in one binary. PLC signals
//! (Modbus TCP, MQTT) become live twin actors, a Delta Lake medallion
//! lakehouse, SQL and a REST API.
//!
//! Layers (imports only point down; see ARCHITECTURE.md in the README):
//!
//! ```text
//! main.rs (CLI)                      the command line
//! platform                           wiring of one running ironlake; the resolved Config
//! api                                HTTP: REST, SQL, metrics
//! pipeline (gold/<job>.rs)           batch: declarative updates, gold jobs
//! query                              DataFusion over the lake, its bounded pool
//! twins, ingest                      live: actors; journal, validation, dedup, quarantine
//! connectors/<protocol>/             one folder per protocol
//! lake                               Delta tables, names, writers, increments, maintenance
//! assets, timeseries                 the asset model; Arrow kernels
//! config, time, metrics              file formats; clocks and time parsing; counters
//! ```
//! `sim` (simulated PLCs) and `bench` sit beside `platform`.

/// The REST API (actix-web): assets, history, SQL, pipelines, health, metrics.
pub mod api;
/// Asset model: ISA-95 hierarchy and twin types, built from the config files.
pub mod assets;
/// `ironlake bench`: end-to-end ingest and scale measurements, peer workloads.
pub mod bench;
/// Configuration file formats (serde) and reading them.
pub mod config;
/// Protocol connectors, one folder per protocol, one registry.
pub mod connectors;
/// The edge gateway: PLCs read beside the machines, buffered on disk, published upstream.
pub mod edge;
/// The live ingest stage: journal, validation, dedup, quarantine, twin batches.
pub mod ingest;
/// Delta tables: names, schemas, batching writers, increments, readers, maintenance.
pub mod lake;
/// Counters and latency samples: Prometheus metrics, benchmark probes.
pub mod metrics;
/// Models: training data, training, registry, serving in the twins.
pub mod ml;
/// Declarative pipelines with expectations, and the gold jobs.
pub mod pipeline;
/// Wiring of a running platform, and its resolved configuration.
pub mod platform;
/// SQL over the lake tables (DataFusion), with time travel.
pub mod query;
/// Simulated PLCs speaking real protocols.
pub mod sim;
/// Clocks, time parsing and time literals (UTC milliseconds inside).
pub mod time;
/// Time-series kernels on Arrow arrays: as-of join, rolling, windows, resampling.
pub mod timeseries;
/// Twin actors: machine, line, plant.
pub mod twins;
/// The twin browser: the web UI's files, embedded, and their routes.
pub mod ui;
