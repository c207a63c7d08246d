package wanlink

import (
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Spec
		str  string // String() of the result
	}{
		{"50ms", Spec{RTT: 50 * time.Millisecond}, "50ms"},
		{"50ms,1%", Spec{RTT: 50 * time.Millisecond, Loss: 0.01}, "50ms,1%"},
		{"50ms,0%,1gbit", Spec{RTT: 50 * time.Millisecond, Rate: 1e9}, "50ms,1gbit"},
		{"50ms,1gbit", Spec{RTT: 50 * time.Millisecond, Rate: 1e9}, "50ms,1gbit"},
		{"50ms,1gbit,1%", Spec{RTT: 50 * time.Millisecond, Loss: 0.01, Rate: 1e9}, "50ms,1%,1gbit"},
		{" 20ms , 0.5% , 200Mbit/s ", Spec{RTT: 20 * time.Millisecond, Loss: 0.005, Rate: 200e6}, "20ms,0.5%,200mbit"},
		{"1.5s,0.01%,1.5gbit", Spec{RTT: 1500 * time.Millisecond, Loss: 0.0001, Rate: 1.5e9}, "1.5s,0.01%,1500mbit"},
		{"0s,5%", Spec{Loss: 0.05}, "0s,5%"},
		{"100us,100kbit", Spec{RTT: 100 * time.Microsecond, Rate: 100e3}, "100µs,100kbit"},
		{"10ms,123456bit", Spec{RTT: 10 * time.Millisecond, Rate: 123456}, "10ms,123456bit"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSpec(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if s := got.String(); s != tc.str {
				t.Errorf("String() = %q, want %q", s, tc.str)
			}
		})
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: a part of the error
	}{
		{"", "want RTT[,loss][,rate]"},
		{",1%", "want RTT[,loss][,rate]"},
		{"50", "want a duration such as 50ms"},
		{"fast", "want a duration such as 50ms"},
		{"-5ms", "want 0 to 10s"},
		{"11s", "want 0 to 10s"},
		{"50ms,", `"" is neither a loss`},
		{"50ms,1", `"1" is neither a loss`},
		{"50ms,1gb", `"1gb" is neither a loss`},
		{"50ms,100%", "less than 100%"},
		{"50ms,150%", "less than 100%"},
		{"50ms,-1%", "want a percentage"},
		{"50ms,1e1%", "want a percentage"},
		{"50ms,NaN%", "want a percentage"},
		{"50ms,%", "want a percentage"},
		{"50ms,1.2.3%", "want a percentage"},
		{"50ms,0.001%", "steps of 0.01%"},
		{"50ms,1%,2%", "two losses"},
		{"50ms,1gbit,1gbit", "two rates"},
		{"50ms,0gbit", "leave the rate out"},
		{"50ms,10bit", "less than 100kbit"},
		{"50ms,101gbit", "more than 100gbit"},
		{"50ms,1e9bit", "want a number and a unit"},
		{"50ms,gbit", "want a number and a unit"},
		{"50ms,1 gigabit", "want a number and a unit"},
		{"50ms,1tbit", "want a number and a unit"},
		{"50ms,-1gbit", "want a number and a unit"},
		{"50ms,1gbps", "want a number and a unit"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParseSpec(tc.in)
			if err == nil {
				t.Fatalf("ParseSpec(%q) succeeded", tc.in)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "WAN link") {
				t.Fatalf("error %q does not say what it is about", err)
			}
		})
	}
}

func TestSpecValidate(t *testing.T) {
	if err := (Spec{}).Validate(); err != nil {
		t.Fatalf("zero Spec: %v", err)
	}
	err := Spec{RTT: -1, Loss: 1, Rate: 5}.Validate()
	for _, want := range []string{"round-trip time", "loss", "rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want a problem with the %s", err, want)
		}
	}
}

// FuzzParseSpec: operator input never panics the parser, and whatever it
// accepts is valid and reads back the same from its String.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"50ms", "50ms,1%", "50ms,0%,1gbit", "20ms,0.5%,200Mbit/s", "1.5s,1gbit,0.01%", "50ms,,", "5h,99.99%,100gbit"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseSpec(s)
		if err != nil {
			return
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("ParseSpec(%q) = %+v, which is invalid: %v", s, spec, err)
		}
		again, err := ParseSpec(spec.String())
		if err != nil {
			t.Fatalf("ParseSpec(%q).String() = %q, which does not parse: %v", s, spec.String(), err)
		}
		if again.RTT != spec.RTT || again.Rate != spec.Rate || again.lossSteps() != spec.lossSteps() {
			t.Fatalf("ParseSpec(%q) = %+v, but its String %q parses to %+v", s, spec, spec.String(), again)
		}
	})
}
