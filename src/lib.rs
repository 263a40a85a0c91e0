//! flashctl: distil diffusion teachers into few-step students, export the whole sampler as one
//! ONNX graph, and validate it across runtimes. See docs/architecture.md for the crate map.

pub mod bench;
pub mod bench_against;
pub mod bench_train;
pub mod bisect;
pub mod bundle;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod demo;
pub mod device;
pub mod diffusers;
pub mod distill;
pub mod eager_runtime;
pub mod eval;
pub mod export;
pub mod fsx;
pub mod junit;
pub mod models;
pub mod network;
pub mod optimizer;
pub mod out_dir;
pub mod pairs;
pub mod plot;
pub mod progress;
pub mod sample;
pub mod sampler;
pub mod schedule;
pub mod sd;
pub mod seeded_vars;
pub mod teacher;
pub mod train;
pub mod train_loop;
pub mod validation;
