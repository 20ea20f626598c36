package redisbroker

// crash stops the broker as a killed process would: no registry clean-up, no
// flush; its keys are left to expire.
func (b *Broker) crash() {
	b.closeOnce.Do(func() {
		b.abandon = true
		close(b.quit)
		b.wg.Wait()
		for _, s := range b.subs {
			s.handoff.close()
		}
		b.workers.Wait()
		_ = b.client.Close()
		_ = b.probeClient.Close()
	})
}
