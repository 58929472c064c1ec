package sandbox

import (
	"context"
	"slices"
	"testing"
	"time"
)

type stageLog struct {
	NopObserver
	names []string
	ctxs  []context.Context
}

func (l *stageLog) Stage(ctx context.Context, name string, start time.Time, took time.Duration) {
	if start.IsZero() || took < 0 {
		name = "bad:" + name
	}
	l.names = append(l.names, name)
	l.ctxs = append(l.ctxs, ctx)
}

func TestStagesReportToEveryObserver(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "request")
	a, b := &stageLog{}, &stageLog{}
	st := newStages(ctx, Observers(a, nil, b))
	st.mark("pull")
	st.mark("root")
	for _, l := range []*stageLog{a, b} {
		if !slices.Equal(l.names, []string{"pull", "root"}) {
			t.Errorf("stages observed %v, want [pull root]", l.names)
		}
		for _, c := range l.ctxs {
			if c.Value(key{}) != "request" {
				t.Error("a stage was observed without the request's context")
			}
		}
	}
	// No observer: marks still time the stages for the log.
	quiet := newStages(ctx, nil)
	quiet.mark("pull")
	if len(quiet.attrs()) != 2 {
		t.Errorf("attrs %v", quiet.attrs())
	}
	// The log's times are rounded to 10µs.
	if took, ok := quiet.attrs()[1].(time.Duration); !ok || took%(10*time.Microsecond) != 0 {
		t.Errorf("stage took %v, want a multiple of 10µs", quiet.attrs()[1])
	}
	// A creation that fails before its first stage still logs its stages:
	// none.
	if got := newStages(ctx, nil).attrs(); len(got) != 0 {
		t.Errorf("attrs before any stage %v, want none", got)
	}
}
