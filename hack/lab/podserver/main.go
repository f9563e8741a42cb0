// Command podserver is the lab's stand-in for a Kubernetes pod: run inside a
// pod network namespace, it answers HTTP on the given TCP ports and echoes
// on the given UDP ports, always with the pod's name, so a test can tell
// which backend a load-balanced request reached.
//
// Every HTTP response body is the pod name and a newline ("pod0\n"), with
// keep-alive as net/http does it; the header X-Remote-Addr carries the
// client address the pod saw, so tests can check source NAT. Every UDP
// datagram is answered with the same "pod0\n" to its sender. When every
// socket is bound, podserver prints the line "ready" on stdout; the lab
// waits for it.
//
// Usage:
//
//	podserver -name pod0 -tcp 80,8080,8443 -udp 5353
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func main() {
	name := flag.String("name", "", "pod name sent in every reply (required)")
	tcp := flag.String("tcp", "", "comma-separated TCP ports to serve HTTP on")
	udp := flag.String("udp", "", "comma-separated UDP ports to echo on")
	flag.Parse()
	if err := run(*name, *tcp, *udp); err != nil {
		log.Fatalf("podserver: %v", err)
	}
}

func run(name, tcpList, udpList string) error {
	if name == "" {
		return errors.New("-name is required")
	}
	tcpPorts, err := parsePorts(tcpList)
	if err != nil {
		return fmt.Errorf("-tcp: %w", err)
	}
	udpPorts, err := parsePorts(udpList)
	if err != nil {
		return fmt.Errorf("-udp: %w", err)
	}
	if len(tcpPorts)+len(udpPorts) == 0 {
		return errors.New("no ports given")
	}
	reply := []byte(name + "\n")

	// Bind everything first, so "ready" means every port answers.
	var listeners []net.Listener
	for _, p := range tcpPorts {
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			return fmt.Errorf("tcp port %d: %w", p, err)
		}
		listeners = append(listeners, ln)
	}
	var conns []net.PacketConn
	for _, p := range udpPorts {
		c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", p))
		if err != nil {
			return fmt.Errorf("udp port %d: %w", p, err)
		}
		conns = append(conns, c)
	}

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Remote-Addr", r.RemoteAddr)
		w.Write(reply)
	})
	errc := make(chan error, len(listeners)+len(conns))
	for _, ln := range listeners {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- fmt.Errorf("http on %s: %w", ln.Addr(), srv.Serve(ln)) }()
	}
	for _, c := range conns {
		go func() { errc <- fmt.Errorf("udp on %s: %w", c.LocalAddr(), echo(c, reply)) }()
	}
	fmt.Println("ready")
	return <-errc
}

// echo answers every datagram on c with reply until reading fails.
func echo(c net.PacketConn, reply []byte) error {
	buf := make([]byte, 65536)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(reply, from); err != nil {
			log.Printf("udp reply to %s: %v", from, err)
		}
	}
}

func parsePorts(list string) ([]uint16, error) {
	var ports []uint16
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("bad port %q", f)
		}
		ports = append(ports, uint16(p))
	}
	return ports, nil
}
