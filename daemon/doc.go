// Package daemon is `lbd run`: the loop that drives a reconcile pass after
// every change the watch reports, on a schedule, with backoff, health and
// metrics.
//
// [New] wires a [Daemon] around anything that syncs (a
// *reconcile.Reconciler) and [Daemon.Run] loops until its context ends:
//
//   - the watch starts before the first sync, so no change is missed; a
//     burst of changes makes one sync, Debounce after the first;
//   - without a watch, or while it reconnects (1 s doubling to 60 s,
//     +-20% jitter), it polls every Interval; every Resync, and on SIGHUP,
//     it syncs fully (with the drift check); SIGUSR1 reopens the log file;
//   - each sync runs under the cross-process lock, held for that sync
//     only, and once started may finish for 10 s after SIGTERM, so lbd
//     never stops between the backend and the store;
//   - it tells systemd READY=1 after the first sync (failed or not), feeds
//     the watchdog, and never cleans up: the programmed state stays.
//
// [Metrics] are lbd's Prometheus metrics and /healthz (healthy while a
// sync succeeded within three resync periods); [Metrics.CountSource] and
// [Metrics.CountBackend] wrap the reconciler's parts to count their
// failures. [LogSync] logs a successful pass, and [LogFile] is the log
// file SIGUSR1 reopens after logrotate, for lbd run and the cron pass
// alike.
//
// daemon imports reconcile and lb only: the lock, the watch and the
// watch's end sentinel come in through [Options] from cmd/lbd.
package daemon
