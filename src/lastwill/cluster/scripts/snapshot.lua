-- snapshot(0) -> {'OK', routever, flat (client id NUL filter, options)}: the whole subscription
-- table at one version, for a replica that starts or fell behind the trimmed routelog. Read only.
return {'OK', tonumber(redis.call('GET', P .. 'routever') or '0'), redis.call('HGETALL', P .. 'routes')}
