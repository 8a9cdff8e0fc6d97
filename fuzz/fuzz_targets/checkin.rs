//! A check-in report as a device sends it (`POST /v1/checkin`), then validated and
//! written back: what the CA stores must parse again to the same report.
#![no_main]
use lanyard_proto::api::CheckinReport;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(r) = serde_json::from_slice::<CheckinReport>(data)
        && r.validate().is_ok()
    {
        let json = serde_json::to_vec(&r).expect("a report serialises");
        let again: CheckinReport = serde_json::from_slice(&json).expect("a stored report parses");
        assert_eq!(again, r);
    }
});
