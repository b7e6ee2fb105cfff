-- clock(0) -> {'OK', now ms}: the engine's clock, as every script reads it.
return {'OK', NOW}
