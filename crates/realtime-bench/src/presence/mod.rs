//! The presence benchmarks: `presence_stats` and a first `presence` page on a
//! topic of many members (memory and Redis stores side by side), and the
//! server CPU that join/leave churn costs with presence on against off.

mod churn;
mod members;
mod node;
mod query;
mod stats;

pub(crate) use churn::medians as churn_medians;
pub use churn::{ChurnRun, label as churn_label, presence_churn};
pub(crate) use stats::constant_time;
pub use stats::{Question, StatsRun, Way, label as stats_label, presence_stats};
