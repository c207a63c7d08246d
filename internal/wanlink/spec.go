package wanlink

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Spec is what the emulated link does to traffic: the bench's --wan
// RTT[,loss][,rate]. The zero Spec adds nothing.
type Spec struct {
	// RTT is the round-trip time the link adds: each direction holds a
	// packet for RTT/2.
	RTT time.Duration
	// Loss is the fraction of packets dropped in each direction, at
	// random (0 ≤ Loss < 1, in steps of 1/LossResolution); 0: none.
	Loss float64
	// Rate is the most each direction carries, in bits per second; 0: no
	// limit.
	Rate int64
}

// LossResolution is how finely Loss is applied: 1/10,000 (0.01 %).
const LossResolution = 10000

// Bounds of a Spec.
const (
	MaxRTT  = 10 * time.Second
	MinRate = 100_000       // 100 kbit/s
	MaxRate = 100_000000000 // 100 Gbit/s
)

// ParseSpec parses RTT[,loss][,rate]: a round-trip time as Go writes
// durations ("50ms", "1.5s"), then optionally a loss in percent ("1%",
// "0.5%") and a rate in bits per second with the unit bit, kbit, mbit or
// gbit ("1gbit", "200mbit"; "/s" may follow). Loss and rate are told
// apart by their units, so "50ms,1gbit" leaves the loss out.
func ParseSpec(s string) (Spec, error) {
	var spec Spec
	parts := strings.Split(s, ",")
	rtt := strings.TrimSpace(parts[0])
	if rtt == "" {
		return Spec{}, fmt.Errorf("WAN link %q: want RTT[,loss][,rate], such as 50ms,1%%,1gbit", s)
	}
	d, err := time.ParseDuration(rtt)
	if err != nil {
		return Spec{}, fmt.Errorf("WAN link %q: round-trip time %q: want a duration such as 50ms", s, rtt)
	}
	spec.RTT = d
	var haveLoss, haveRate bool
	for _, p := range parts[1:] {
		p = strings.TrimSpace(p)
		switch {
		case strings.HasSuffix(p, "%"):
			if haveLoss {
				return Spec{}, fmt.Errorf("WAN link %q: two losses", s)
			}
			haveLoss = true
			if spec.Loss, err = parseLoss(strings.TrimSuffix(p, "%")); err != nil {
				return Spec{}, fmt.Errorf("WAN link %q: loss %q: %w", s, p, err)
			}
		case p != "" && strings.ContainsAny(p[len(p)-1:], "tTsS"):
			if haveRate {
				return Spec{}, fmt.Errorf("WAN link %q: two rates", s)
			}
			haveRate = true
			if spec.Rate, err = parseRate(p); err != nil {
				return Spec{}, fmt.Errorf("WAN link %q: rate %q: %w", s, p, err)
			}
		default:
			return Spec{}, fmt.Errorf("WAN link %q: %q is neither a loss (such as 1%%) nor a rate (such as 1gbit)", s, p)
		}
	}
	if err := spec.Validate(); err != nil {
		return Spec{}, fmt.Errorf("WAN link %q: %w", s, err)
	}
	return spec, nil
}

// parseLoss parses a percentage without its % sign: digits with at most
// one decimal point.
func parseLoss(p string) (float64, error) {
	if !plainDecimal(p) {
		return 0, errors.New("want a percentage such as 1% or 0.5%")
	}
	v, err := strconv.ParseFloat(p, 64)
	if err != nil {
		return 0, errors.New("want a percentage such as 1% or 0.5%")
	}
	return v / 100, nil
}

// rateUnits are the rate units ParseSpec takes, as tc writes them.
var rateUnits = []struct {
	name string
	bits float64
}{
	{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1},
}

// parseRate parses a number and a unit of rateUnits, "/s" allowed after.
func parseRate(p string) (int64, error) {
	lower := strings.TrimSuffix(strings.ToLower(p), "/s")
	for _, u := range rateUnits {
		num, ok := strings.CutSuffix(lower, u.name)
		if !ok {
			continue
		}
		num = strings.TrimSpace(num)
		if !plainDecimal(num) {
			break
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			break
		}
		switch bits := math.Round(v * u.bits); {
		case bits > MaxRate:
			return 0, fmt.Errorf("more than %s", formatRate(MaxRate))
		case bits < MinRate:
			return 0, fmt.Errorf("less than %s (leave the rate out for no limit)", formatRate(MinRate))
		default:
			return int64(bits), nil
		}
	}
	return 0, errors.New("want a number and a unit: bit, kbit, mbit or gbit (such as 1gbit or 200mbit)")
}

// plainDecimal reports whether s is digits with at most one decimal
// point among them: no sign, exponent, hexadecimal, Inf or NaN.
func plainDecimal(s string) bool {
	digits, dots := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && digits <= 15 && dots <= 1
}

// Validate reports what is wrong with the spec, if anything.
func (s Spec) Validate() error {
	var errs []error
	if s.RTT < 0 || s.RTT > MaxRTT {
		errs = append(errs, fmt.Errorf("round-trip time %s: want 0 to %s", s.RTT, MaxRTT))
	}
	if !(s.Loss >= 0 && s.Loss < 1) {
		errs = append(errs, fmt.Errorf("loss %g%%: want at least 0%% and less than 100%%", s.Loss*100))
	} else if steps := s.Loss * LossResolution; math.Abs(steps-math.Round(steps)) > 1e-6 {
		errs = append(errs, fmt.Errorf("loss %g%%: the link drops in steps of %g%%", s.Loss*100, 100.0/LossResolution))
	}
	if s.Rate != 0 && (s.Rate < MinRate || s.Rate > MaxRate) {
		errs = append(errs, fmt.Errorf("rate %d bit/s: want %s to %s (or none)", s.Rate, formatRate(MinRate), formatRate(MaxRate)))
	}
	return errors.Join(errs...)
}

// String is the spec as ParseSpec reads it, such as "50ms,1%,1gbit".
func (s Spec) String() string {
	out := s.RTT.String()
	if s.Loss != 0 {
		out += "," + strconv.FormatFloat(float64(s.lossSteps())*100/LossResolution, 'f', -1, 64) + "%"
	}
	if s.Rate != 0 {
		out += "," + formatRate(s.Rate)
	}
	return out
}

// formatRate writes bits per second in the largest unit that keeps it a
// whole number, or with decimals below a kbit.
func formatRate(bits int64) string {
	for _, u := range rateUnits {
		if b := int64(u.bits); bits%b == 0 {
			return strconv.FormatInt(bits/b, 10) + u.name
		}
	}
	return strconv.FormatInt(bits, 10) + "bit"
}

// lossSteps is the loss in steps of 1/LossResolution.
func (s Spec) lossSteps() int { return int(math.Round(s.Loss * LossResolution)) }

// bdp is the bandwidth-delay product in bytes: what is in flight on the
// link at full rate (0 without a rate).
func (s Spec) bdp() int64 { return int64(float64(s.Rate) / 8 * s.RTT.Seconds()) }
