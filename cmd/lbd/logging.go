package main

import "github.com/lbd/lbd/daemon"

// openLog sets a.log to a logger writing to stderr and, when file is set,
// to that file too, and a.fileLog to the file alone. file is --log-file,
// or "" for the read-only commands (plan, check, explain), which never
// touch the log file. The file closes when run returns, after its last
// error line. It returns the reopen of the file, for SIGUSR1.
func (a *app) openLog(file string) (reopen func() error, err error) {
	l, err := daemon.OpenLogs(a.stderr, file, a.cfg.LogFormat, a.cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	a.log, a.fileLog, a.closeLog = l.Log, l.File, l.Close
	return l.Reopen, nil
}
