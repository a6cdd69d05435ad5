//! Pod states as the kubelet reports them, and what ktx says about each.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    PodCondition, PodSpec, PodStatus,
};

use super::*;

fn pod(phase: &str, scheduled: bool, state: Option<ContainerState>, ready: bool) -> Pod {
    Pod {
        spec: Some(PodSpec {
            node_name: scheduled.then(|| "node".to_string()),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: state.map(|s| {
                vec![ContainerStatus {
                    name: "router".into(),
                    image: "ktx.local/ktx-router:nope".into(),
                    state: Some(s),
                    restart_count: 3,
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 2,
                            message: Some("bad flag\n".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
            }),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str) -> Option<ContainerState> {
    Some(ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some("details".into()),
        }),
        ..Default::default()
    })
}

fn running() -> Option<ContainerState> {
    Some(ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    })
}

#[test]
fn image_problems_are_named_and_permanent_ones_fail_fast() {
    let b = blocker(
        &pod("Pending", true, waiting("ImagePullBackOff"), false),
        Goal::Ready,
    )
    .unwrap();
    assert!(!b.fatal, "a registry blip may pass");
    assert!(b.reason.contains("ImagePullBackOff"), "{}", b.reason);
    assert!(
        b.reason.contains("ktx.local/ktx-router:nope"),
        "{}",
        b.reason
    );
    let b = blocker(
        &pod("Pending", true, waiting("ErrImageNeverPull"), false),
        Goal::Ready,
    )
    .unwrap();
    assert!(b.fatal);
}

#[test]
fn a_crash_loop_shows_the_last_exit() {
    let b = blocker(
        &pod("Running", true, waiting("CrashLoopBackOff"), false),
        Goal::Running,
    )
    .unwrap();
    assert!(b.fatal);
    assert!(
        b.reason.contains("last exit code 2: bad flag"),
        "{}",
        b.reason
    );
}

#[test]
fn running_and_ready_are_different_goals() {
    let p = pod("Running", true, running(), false);
    assert_eq!(blocker(&p, Goal::Running), None);
    assert_eq!(
        blocker(&p, Goal::Ready).unwrap().reason,
        "running, not Ready yet"
    );
    assert_eq!(
        blocker(&pod("Running", true, running(), true), Goal::Ready),
        None
    );
}

#[test]
fn unscheduled_and_ended_pods() {
    let b = blocker(&pod("Pending", false, None, false), Goal::Running).unwrap();
    assert!(
        b.reason.starts_with("waiting to be scheduled"),
        "{}",
        b.reason
    );
    assert!(
        blocker(&pod("Failed", true, None, false), Goal::Running)
            .unwrap()
            .fatal
    );
    assert!(blocker(&Pod::default(), Goal::Running).is_some());
}

#[test]
fn polls_fast_while_a_pod_may_be_about_to_start_then_slower() {
    assert_eq!(poll_interval(Duration::ZERO), Duration::from_millis(100));
    assert_eq!(
        poll_interval(Duration::from_millis(4900)),
        Duration::from_millis(100)
    );
    assert_eq!(
        poll_interval(Duration::from_secs(5)),
        Duration::from_millis(300)
    );
    assert_eq!(
        poll_interval(Duration::from_secs(60)),
        Duration::from_millis(300)
    );
}
