//! The matcher's counters, exported as metric deltas.

use super::{Engine, Pipeline};
use crate::{
    flows::streams::StreamStats, sinks::metrics::ResultLabels, targets::learning::WatchSink,
};

impl<W: WatchSink> Pipeline<W> {
    /// Exports the matcher's counters (cumulative per worker) as deltas.
    pub(super) fn export_stream_stats(&mut self) {
        let Some(m) = self.matching.as_mut() else {
            return;
        };
        if let Engine::Inline(t) = &m.engine {
            m.stats.insert(0, t.stats.clone());
        }
        let mut now = StreamStats::default();
        for st in m.stats.values() {
            now.bytes_scanned += st.bytes_scanned;
            now.gate.add(st.gate);
            now.gaps += st.gaps;
            now.scan_errors += st.scan_errors;
            now.table.add(st.table);
            now.decode.add(st.decode);
        }
        self.metrics
            .bytes_scanned
            .inc_by(now.bytes_scanned.saturating_sub(m.exported.bytes_scanned));
        self.metrics
            .reassembly_gaps
            .inc_by(now.gaps.saturating_sub(m.exported.gaps));
        self.metrics
            .prefiltered
            .inc_by(now.gate.bytes.saturating_sub(m.exported.gate.bytes));
        now.scan_errors += m.lost;
        self.metrics
            .scan_errors
            .inc_by(now.scan_errors.saturating_sub(m.exported.scan_errors));
        let skipped = |g: &crate::matcher::triggers::GateStats| g.sections - g.decoded;
        for (result, n, before) in [
            ("decoded", now.gate.decoded, m.exported.gate.decoded),
            ("skipped", skipped(&now.gate), skipped(&m.exported.gate)),
        ] {
            self.metrics
                .sections
                .get_or_create(&ResultLabels {
                    result: result.into(),
                })
                .inc_by(n.saturating_sub(before));
        }
        self.metrics.set_evictions("matcher_flows", now.table);
        self.metrics.set_decode_limits(now.decode);
        m.exported = now;
    }

    /// Brings every bounded table's eviction counts to the metrics.
    pub(super) fn export_evictions(&self) {
        for (name, e) in self.targeting.table_evictions() {
            self.metrics.set_evictions(name, e);
        }
        let (name, e) = self.posture.evictions();
        self.metrics.set_evictions(name, e);
        if let Some(m) = self.matching.as_ref() {
            let (name, e) = m.replay.evictions();
            self.metrics.set_evictions(name, e);
        }
    }
}
