// Package kit is the reconcile kit every itmanager controller shares: one
// status writer, one kstatus summary, one event emitter driven by
// condition changes, and one way to merge requeue results. A controller
// gathers what it needs, decides with a pure package, applies the result,
// and then hands its new status to this package exactly once.
//
// The pieces, each the only one of its kind in the code base:
//
//   - [Status] writes a status: by server-side apply for kinds whose status
//     the operator owns outright (optionally conditional on the
//     resourceVersion read), or by a merge patch under an optimistic lock
//     for a status several writers share (a Device's, where the check-in
//     service owns observed facts). Either way a status equal to the one
//     read, or to our own last write the cache has not shown yet, costs no
//     request.
//   - [Summarize] sets Ready, Reconciling and Stalled and observedGeneration
//     the same way on every kind (kstatus conventions).
//   - [Emitter] turns condition changes into Events; a nil recorder is a
//     no-op.
//   - [Merge] and [After] combine requeue requests with one floor.
package kit
