package devices_test

import (
	"errors"
	"testing"

	"github.com/telehub/telehub/devices"
)

func TestFeed(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		var f devices.Feed
		s, err := f.Subscribe(4)
		if err != nil {
			t.Fatal(err)
		}
		f.Publish([]devices.Message{{Seq: 1}, {Seq: 2}})
		f.Publish(nil) // ignored
		f.Publish([]devices.Message{{Seq: 3}})
		if b := <-s.C(); len(b) != 2 || b[1].Seq != 2 {
			t.Fatalf("batch=%v, want seq 1,2", b)
		}
		if b := <-s.C(); len(b) != 1 || b[0].Seq != 3 {
			t.Fatalf("batch=%v, want seq 3", b)
		}
		s.Close()
		s.Close()
		if _, ok := <-s.C(); ok {
			t.Fatal("channel open after Close")
		}
	})
	t.Run("ErrLagged", func(t *testing.T) {
		var f devices.Feed
		slow, _ := f.Subscribe(1)
		fast, _ := f.Subscribe(8)
		for i := 1; i <= 3; i++ {
			f.Publish([]devices.Message{{Seq: devices.Seq(i)}}) // never blocks
		}
		<-slow.C()
		if _, ok := <-slow.C(); ok {
			t.Fatal("slow subscriber not dropped")
		}
		if !errors.Is(slow.Err(), devices.ErrLagged) {
			t.Fatalf("Err=%v, want ErrLagged", slow.Err())
		}
		if len(fast.C()) != 3 {
			t.Fatalf("fast subscriber got %d batches, want 3", len(fast.C()))
		}
		if f.Len() != 1 {
			t.Fatalf("Len=%d, want 1", f.Len())
		}
	})
	t.Run("Device", func(t *testing.T) {
		var f devices.Feed
		a, _ := f.SubscribeDevice("a", 4)
		a2, _ := f.SubscribeDevice("a", 4)
		b, _ := f.SubscribeDevice("b", 1)
		all, _ := f.Subscribe(4)
		f.Publish([]devices.Message{{Seq: 1, Device: "a"}, {Seq: 2, Device: "c"}, {Seq: 3, Device: "a"}})
		f.Publish([]devices.Message{{Seq: 4, Device: "c"}})
		for _, s := range []*devices.Subscription{a, a2} {
			if got := <-s.C(); len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 3 || len(s.C()) != 0 {
				t.Fatalf("device a got %v (+%d batches), want seq 1 and 3 only", got, len(s.C()))
			}
		}
		if len(b.C()) != 0 || len(all.C()) != 2 || f.Len() != 4 {
			t.Fatalf("b has %d batches, all %d, Len %d; want 0, 2, 4", len(b.C()), len(all.C()), f.Len())
		}
		f.Publish([]devices.Message{{Seq: 5, Device: "b"}})
		f.Publish([]devices.Message{{Seq: 6, Device: "b"}}) // b's buffer of 1 is full
		<-b.C()
		if _, ok := <-b.C(); ok || !errors.Is(b.Err(), devices.ErrLagged) {
			t.Fatalf("b: Err=%v, want ErrLagged", b.Err())
		}
		a.Close()
		f.Close()
		if _, ok := <-a2.C(); ok {
			<-a2.C()
		}
		if !errors.Is(a2.Err(), devices.ErrClosed) || a.Err() != nil || f.Len() != 0 {
			t.Fatalf("a2 Err=%v, a Err=%v, Len %d", a2.Err(), a.Err(), f.Len())
		}
	})
	t.Run("ErrClosed", func(t *testing.T) {
		var f devices.Feed
		s, _ := f.Subscribe(1)
		f.Close()
		if _, ok := <-s.C(); ok || !errors.Is(s.Err(), devices.ErrClosed) {
			t.Fatalf("Err=%v, want ErrClosed", s.Err())
		}
		if _, err := f.Subscribe(1); !errors.Is(err, devices.ErrClosed) {
			t.Fatalf("Subscribe err=%v, want ErrClosed", err)
		}
	})
}

func TestThrottle(t *testing.T) {
	var th devices.Throttle
	now := timeAt(0)
	if ok, _ := th.Allow("k", now); !ok {
		t.Fatal("first event not allowed")
	}
	for i := 0; i < 3; i++ {
		if ok, _ := th.Allow("k", now.Add(1)); ok {
			t.Fatal("repeat allowed within interval")
		}
	}
	if ok, n := th.Allow("k", now.Add(61e9)); !ok || n != 3 {
		t.Fatalf("after interval ok=%v suppressed=%d, want true 3", ok, n)
	}
	if ok, _ := th.Allow("other", now); !ok {
		t.Fatal("other key not allowed")
	}
}
