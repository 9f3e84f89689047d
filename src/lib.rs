//! ironlake: an industrial digital-twin platform in one binary. PLC signals
//! (Modbus TCP, MQTT) become live twin actors, a Delta Lake medallion
//! lakehouse, and a REST API.

/// The REST API (actix-web).
pub mod api;
/// Asset model: ISA-95 hierarchy, twin types, source bindings.
pub mod assets;
/// `ironlake bench`: end-to-end ingest and scale measurements.
pub mod bench;
/// Typed, validated configuration (platform, plants, twin types).
pub mod config;
/// Protocol connectors behind one `Source` trait.
pub mod connectors;
/// Delta tables: schemas, batching writers, readers.
pub mod lake;
/// Latency samples for benchmarks and health.
pub mod metrics;
/// Medallion flows: the bronze/silver ingest stage.
pub mod pipeline;
/// Wiring of a running platform.
pub mod platform;
/// SQL over the lake tables (DataFusion), with time travel.
pub mod query;
/// Simulated PLCs speaking real protocols.
pub mod sim;
/// Time-series kernels on Arrow arrays: as-of join, rolling, windows, resampling.
pub mod timeseries;
/// Twin actors: machine, line, plant.
pub mod twins;
