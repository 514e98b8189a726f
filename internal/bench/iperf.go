package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// IperfResult is what the bench takes from one `iperf3 --json` run.
type IperfResult struct {
	// Protocol is "TCP" or "UDP", as iperf3 reports it.
	Protocol string `json:"protocol"`
	// Streams is the number of parallel streams (-P).
	Streams int `json:"streams"`
	// Seconds is the length of the test as the receiver measured it.
	Seconds float64 `json:"seconds"`
	// BitsPerSecond is the throughput the receiver saw: for TCP the sum
	// of what was received, for UDP what arrived of the offered rate.
	BitsPerSecond float64 `json:"bitsPerSecond"`
	// SentBitsPerSecond is what the sender put on the wire.
	SentBitsPerSecond float64 `json:"sentBitsPerSecond"`
	// Retransmits counts TCP retransmissions (0 for UDP).
	Retransmits int `json:"retransmits,omitempty"`
	// JitterMs, LostPackets, Packets and LostPercent are UDP only, measured
	// by the receiver.
	JitterMs    float64 `json:"jitterMs,omitempty"`
	LostPackets int     `json:"lostPackets,omitempty"`
	Packets     int     `json:"packets,omitempty"`
	LostPercent float64 `json:"lostPercent,omitempty"`
	// CPUSender and CPUReceiver are iperf3's own CPU use, in percent of
	// one CPU, of the client (sender) and the server (receiver) process.
	CPUSender   float64 `json:"cpuSender"`
	CPUReceiver float64 `json:"cpuReceiver"`
}

// iperfJSON is the part of iperf3's --json output the bench reads (checked
// against iperf 3.12; later versions add fields, none of these move).
type iperfJSON struct {
	Start struct {
		Version   string `json:"version"`
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
		// Sum is what iperf3 before 3.13 reports for UDP besides
		// sum_sent and sum_received (some releases only this).
		Sum *iperfSum `json:"sum"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   int     `json:"retransmits"`
	JitterMs      float64 `json:"jitter_ms"`
	LostPackets   int     `json:"lost_packets"`
	Packets       int     `json:"packets"`
	LostPercent   float64 `json:"lost_percent"`
}

// ErrIperfBusy is returned for the iperf3 server's "busy" refusal: it is
// still finishing the previous test, and the client may try again.
var ErrIperfBusy = errors.New("iperf3 server is busy")

// ParseIperf reads the output of `iperf3 --client ... --json`. A run that
// failed (iperf3 reports it in the JSON's "error" field, with no results)
// is an error naming iperf3's reason.
func ParseIperf(data []byte) (IperfResult, error) {
	var j iperfJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return IperfResult{}, fmt.Errorf("reading iperf3 output: %w (output starts %q)", err, head(data, 80))
	}
	if j.Error != "" {
		if strings.Contains(j.Error, "busy") {
			return IperfResult{}, fmt.Errorf("iperf3: %s: %w", j.Error, ErrIperfBusy)
		}
		return IperfResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	r := IperfResult{
		Protocol:    j.Start.TestStart.Protocol,
		Streams:     j.Start.TestStart.NumStreams,
		CPUSender:   j.End.CPU.HostTotal,
		CPUReceiver: j.End.CPU.RemoteTotal,
	}
	recv, sent := j.End.SumReceived, j.End.SumSent
	if recv == nil {
		recv = j.End.Sum // UDP of older iperf3: the receiver's figures
	}
	if sent == nil {
		sent = recv
	}
	if recv == nil {
		return IperfResult{}, errors.New("reading iperf3 output: no end.sum_received or end.sum; is it the output of a finished client run with --json?")
	}
	r.Seconds = recv.Seconds
	r.BitsPerSecond = recv.BitsPerSecond
	r.SentBitsPerSecond = sent.BitsPerSecond
	if r.Protocol == "UDP" {
		// The receiver's loss and jitter; iperf3 3.12 also repeats them
		// in "sum", and its sum_sent has zeros there.
		u := recv
		if j.End.Sum != nil {
			u = j.End.Sum
		}
		r.JitterMs, r.LostPackets, r.Packets, r.LostPercent = u.JitterMs, u.LostPackets, u.Packets, u.LostPercent
	} else {
		r.Retransmits = sent.Retransmits
	}
	return r, nil
}

// head returns at most n bytes of b as a string, for messages.
func head(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}
