// SPDX-License-Identifier: GPL-2.0-only
//
// Status of the SIMS Mobility Agent: what `simsd status --json` reports,
// through the rpcd plugin's ubus object `sims`, refreshed every 5 s.
//
// Element ids for tests: #sims-status (everything below), #sims-empty
// (agent not running), #sims-agent, #sims-peers (rows tr[data-peer]),
// #sims-bindings (rows tr[data-addr]), #sims-counters.
//
// Text from the router is always put in text nodes (E(tag, attrs, [ text ])),
// never parsed as HTML.

'use strict';
'require view';
'require rpc';
'require poll';
'require ui';
'require dom';

const callStatus = rpc.declare({
	object: 'sims',
	method: 'status'
});

const callResetTraffic = rpc.declare({
	object: 'sims',
	method: 'reset_traffic',
	params: [ 'peer' ]
});

// Counters that are the agent's work, in this order; all others count
// something refused or dropped, and are shown only when not zero.
const ACTIVITY = [
	[ 'rx_ok', _('Messages accepted') ],
	[ 'tx', _('Messages sent') ],
	[ 'verifications', _('Device proofs verified') ],
	[ 'rx_challenged', _('Peer requests answered with a challenge') ],
	[ 'peer_moved', _('Peer address changes followed') ],
	[ 'redirects_ended', _('Redirects ended: the address appeared on the LAN') ]
];

const REFUSALS = [
	[ 'rx_malformed', _('Malformed datagrams') ],
	[ 'rx_old_version', _('Datagrams of an old protocol version') ],
	[ 'rx_unauthenticated', _('Messages failing authentication') ],
	[ 'rx_replay', _('Replayed messages') ],
	[ 'rx_bad_cookie', _('Device messages without a valid cookie') ],
	[ 'rx_refused', _('Requests refused') ],
	[ 'rx_unexpected', _('Unexpected messages') ],
	[ 'rx_refused_move', _('Move challenges for another address') ],
	[ 'rate_limited', _('Proofs not verified: rate limit reached') ],
	[ 'table_full', _('Registrations refused: binding table full') ],
	[ 'kernel_failed', _('Bindings undone: a kernel change failed') ],
	[ 'ipip_unknown_endpoint', _('Tunnel packets from unknown addresses') ],
	[ 'ipip_malformed', _('Malformed tunnel packets') ],
	[ 'ipip_rx_errors', _('Tunnel receive errors') ]
];

function text(v) {
	return (v == null) ? '' : String(v);
}

// An RPC failure's message, without the stack LuCI appends to it.
function rpcMessage(e) {
	return text(e && e.message ? e.message : e).split('\n')[0].replace(/\s+at\s+\S+\s+\(.*$/, '');
}

// 12s, 4m 10s, 3h 5m, 2d 4h
function duration(s) {
	s = Math.max(0, Math.floor(+s || 0));

	if (s < 60)
		return _('%ds').format(s);

	if (s < 3600)
		return _('%dm %ds').format(Math.floor(s / 60), s % 60);

	if (s < 86400)
		return _('%dh %dm').format(Math.floor(s / 3600), Math.floor(s / 60) % 60);

	return _('%dd %dh').format(Math.floor(s / 86400), Math.floor(s / 3600) % 24);
}

function ago(s) {
	return (s == null) ? _('never') : _('%s ago').format(duration(s));
}

function bytes(n) {
	return '%1024.2mB'.format(+n || 0);
}

function date(unix) {
	const d = new Date(unix * 1000);

	return '%04d-%02d-%02d %02d:%02d'.format(d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes());
}

// LuCI's label badges; 'error' is not among the theme's, so it is drawn
// with the theme's error colour.
function badge(cls, label, title) {
	return E('span', {
		'class': 'label ' + cls,
		'style': (cls == 'error') ? 'background-color:var(--error-color-high,#d00000);color:var(--on-error-color,#fff)' : null,
		'title': title || null
	}, [ label ]);
}

function small(content) {
	return E('div', { 'class': 'sims-sub', 'style': 'font-size:90%;opacity:.8' }, content);
}

function section(id, title, content) {
	return E('div', { 'class': 'cbi-section', 'id': id }, [ E('h3', [ title ]) ].concat(content));
}

// A two-column table of labels and values.
function itemTable(rows) {
	return E('table', { 'class': 'table' }, rows.map((r) =>
		E('tr', { 'class': 'tr', 'data-item': r[0] }, [
			E('td', { 'class': 'td left', 'width': '33%' }, [ r[1] ]),
			E('td', { 'class': 'td left' }, Array.isArray(r[2]) ? r[2] : [ r[2] ])
		])));
}

// A cbi-section-table: header titles, then rows (each [attrs, cells]),
// or a placeholder row.
function gridTable(id, titles, rows, placeholder) {
	const head = E('tr', { 'class': 'tr table-titles' }, titles.map((t) => E('th', { 'class': 'th' }, [ t ])));
	const body = rows.map((r) => E('tr', Object.assign({ 'class': 'tr' }, r[0]), r[1].map((c, i) =>
		E('td', { 'class': 'td', 'data-title': titles[i] }, Array.isArray(c) ? c : [ c ]))));

	if (body.length == 0)
		body.push(E('tr', { 'class': 'tr placeholder' }, [
			E('td', { 'class': 'td', 'colspan': titles.length }, [ E('em', [ placeholder ]) ])
		]));

	return E('table', { 'class': 'table cbi-section-table', 'id': id }, [ head ].concat(body));
}

return view.extend({
	load: function() {
		// Users with read access only to the page (its ACL group
		// luci-app-sims-status) get no Reset buttons: LuCI's dispatcher
		// marks the page read-only for them.
		this.canReset = (L.hasViewPermission() !== false);

		return this.fetch();
	},

	fetch: function() {
		return callStatus().catch((e) => ({ error: 'rpc', message: rpcMessage(e) }));
	},

	refresh: function() {
		return this.fetch().then((st) => {
			const node = document.getElementById('sims-status');

			if (node)
				dom.content(node, this.renderStatus(st));
		});
	},

	handleResetTraffic: function(peer, ev) {
		const what = peer
			? _('the traffic counters of the roaming partner %s').format(peer)
			: _('the traffic counters of every roaming partner');

		ui.showModal(_('Reset traffic counters'), [
			E('p', [ _('This sets %s to zero, now. The totals counted so far are lost: note them first if you settle traffic with your partners.').format(what) ]),
			E('div', { 'class': 'right' }, [
				E('button', {
					'class': 'btn cbi-button',
					'id': 'sims-reset-cancel',
					'click': ui.hideModal
				}, [ _('Cancel') ]),
				' ',
				E('button', {
					'class': 'btn cbi-button cbi-button-negative important',
					'id': 'sims-reset-confirm',
					'click': ui.createHandlerFn(this, function() {
						return callResetTraffic(peer || '').catch((e) => ({ error: 'rpc', message: rpcMessage(e) })).then((r) => {
							ui.hideModal();

							if (r && r.ok)
								ui.addNotification(null, E('p', [ peer
									? _('The traffic of %s is counted from zero.').format(peer)
									: _('The traffic of every partner is counted from zero.') ]), 'info');
							else
								ui.addNotification(null, E('p', [
									_('The counters were not reset: %s').format(text(r && r.message) || text(r && r.error))
								]), 'error');

							return this.refresh();
						});
					})
				}, [ _('Reset counters') ])
			])
		]);
	},

	renderEmpty: function(st) {
		const hint = (st.error == 'rpc')
			? _('The status service of this page (the rpcd plugin of luci-app-sims) did not answer. After installing the package, restart rpcd: %s.').format('<code>/etc/init.d/rpcd restart</code>')
			: (st.error == 'not_installed')
				? _('simsd is not installed: install the sims package.')
				: _('Enable the agent under Services → SIMS ("Enabled", then Save & Apply), or start it on the router with %s. If it does not start, %s and the system log (%s) say why.')
				.format('<code>/etc/init.d/sims start</code>', '<code>simsd check</code>', '<code>logread -e sims</code>');

		return E('div', { 'class': 'cbi-section', 'id': 'sims-empty' }, [
			E('h3', [ (st.error == 'rpc') ? _('The state of the SIMS agent is not available') : _('The SIMS agent is not running') ]),
			E('div', { 'class': 'alert-message warning' }, [
				E('p', [
					E('strong', [ (st.error == 'not_running') ? _('simsd said:') : _('Details:') ]), ' ',
					E('code', { 'id': 'sims-empty-message' }, [ text(st.message) || _('nothing') ])
				]),
				E('p', {}, hint)	// HTML: static text and <code> only
			])
		]);
	},

	renderAgent: function(st) {
		const endpoint = [ text(st.endpoint) ];

		if (st.endpoint_from == 'wan')
			endpoint.push(' ', E('em', [ _('(followed from WAN)') ]));

		const b = Array.isArray(st.bindings) ? st.bindings : [];
		const home = b.filter((x) => x.role == 'home').length;

		return section('sims-agent', _('Agent'), [
			itemTable([
				[ 'id', _('Agent id'), E('strong', [ text(st.id) ]) ],
				[ 'provider', _('Provider'), st.provider ? text(st.provider) : E('em', [ _('none') ]) ],
				[ 'endpoint', _('WAN address'), endpoint ],
				[ 'backend', _('Tunnels'), (st.backend == 'kernel') ? _('Kernel ipip') : (st.backend == 'userspace') ? _('Userspace') : text(st.backend) ],
				[ 'bindings', _('Bindings'), _('%d (%d of this network\'s devices away, %d visitors)').format(b.length, home, b.length - home) ],
				[ 'credentials', _('Credentials remembered'), text(st.credentials) ],
				[ 'uptime', _('Running for'), (st.uptime_s != null) ? '%t'.format(st.uptime_s) : '-' ],
				[ 'instance', _('Run id'), E('code', { 'title': _('Changes at every start of simsd') }, [ text(st.instance) ]) ],
				[ 'version', _('Version'), text(st.version) ]
			])
		]);
	},

	renderPeers: function(st) {
		const peers = Array.isArray(st.peers) ? st.peers : [];
		const since = +st.traffic_since || 0;
		const titles = [ _('Partner'), _('WAN address'), _('State'), _('Bindings'), _('Sent'), _('Received'), _('Last answered'), '' ];

		const rows = peers.map((p) => {
			const endpoint = [ text(p.endpoint) ];

			if (p.moved)
				endpoint.push(' ', badge('warning', _('moved'), _('The partner proved it moved here: its configured address is no longer used')));

			const state = (p.reachable == 'yes')
				? badge('success', _('reachable'))
				: (p.reachable == 'no')
					? badge('error', _('not answering'), _('The partner did not answer the last requests'))
					: badge('', _('unknown'), _('Not asked yet: the agent asks a partner when it has a binding with it'));

			const first = [ E('strong', [ text(p.id) ]), small([ text(p.tunnel), ' ', (p.tunnel_up ? _('up') : _('down')) ]) ];

			// A partner reset alone: its own start.
			if (p.traffic_since != null && +p.traffic_since != since && +p.traffic_since > 0)
				first.push(small([ _('counted since %s').format(date(+p.traffic_since)) ]));

			const sent = [ bytes(p.tx_bytes), small([ _('%d packets').format(+p.tx_packets || 0) ]) ];
			const rcvd = [ bytes(p.rx_bytes), small([ _('%d packets').format(+p.rx_packets || 0) ]) ];

			if (+p.rx_dropped > 0)
				rcvd.push(small([ _('%d dropped').format(+p.rx_dropped) ]));

			return [ { 'data-peer': text(p.id) }, [
				first,
				endpoint,
				[ state ],
				text(+p.bindings || 0),
				sent,
				rcvd,
				ago(p.last_heard_s),
				this.canReset ? E('button', {
					'class': 'btn cbi-button cbi-button-reset sims-reset',
					'data-peer': text(p.id),
					'title': _('Count this partner\'s traffic from zero'),
					'click': ui.createHandlerFn(this, 'handleResetTraffic', text(p.id))
				}, [ _('Reset counters') ]) : ''
			] ];
		});

		const content = [
			E('div', { 'class': 'cbi-section-descr' }, [
				_('Traffic through each partner\'s tunnel: sent is what this network relayed to the partner\'s, received what came from it.')
			]),
			gridTable('sims-peers-table', titles, rows, _('No roaming agreements are configured.'))
		];

		if (peers.length)
			content.push(E('div', { 'class': 'sims-since', 'style': 'display:flex;align-items:center;justify-content:space-between;margin:.5em 0 1.5em' }, [
				E('span', { 'id': 'sims-traffic-since' }, [ since > 0
					? _('Counted since %s.').format(date(since))
					: _('Counted since the accounting started.') ]),
				this.canReset ? E('button', {
					'class': 'btn cbi-button cbi-button-reset',
					'id': 'sims-reset-all',
					'click': ui.createHandlerFn(this, 'handleResetTraffic', '')
				}, [ _('Reset all counters') ]) : ''
			]));

		return section('sims-peers', _('Roaming partners'), content);
	},

	renderBindings: function(st) {
		const list = Array.isArray(st.bindings) ? st.bindings : [];
		const titles = [ _('Address'), _('Role'), _('Partner'), _('Device'), _('Age'), _('Expires in') ];

		const rows = list.map((b) => {
			const role = (b.role == 'home')
				? E('span', { 'title': _('A device of this network, now on the partner\'s: its sessions are relayed there') }, [ _('Home device away') ])
				: E('span', { 'title': _('A device of the partner\'s network, now on this one: its sessions are relayed back') }, [ _('Visitor') ]);

			const expires = [ duration(b.expires_s) ];

			if (b.pending)
				expires.push(' ', badge('notice', _('pending'), _('Waiting for the home agent\'s answer')));

			return [ { 'data-addr': text(b.addr) }, [
				E('strong', [ text(b.addr) ]),
				role,
				text(b.peer),
				E('code', [ text(b.node) ]),
				duration(b.age_s),
				expires
			] ];
		});

		return section('sims-bindings', _('Bindings'), [
			gridTable('sims-bindings-table', titles, rows, _('No bindings: no visiting or departed devices are being relayed.'))
		]);
	},

	renderCounters: function(st) {
		const c = (st.counters && typeof(st.counters) == 'object') ? st.counters : {};
		const known = {};
		const activity = [], refused = [];

		for (const a of ACTIVITY) {
			known[a[0]] = true;
			activity.push([ a[0], a[1], text(+c[a[0]] || 0) ]);
		}

		for (const r of REFUSALS) {
			known[r[0]] = true;

			if (+c[r[0]] > 0)
				refused.push([ r[0], r[1], text(+c[r[0]]) ]);
		}

		// Counters of a newer simsd: shown by name when not zero.
		for (const k of Object.keys(c).sort())
			if (!known[k] && +c[k] > 0)
				refused.push([ k, k, text(+c[k]) ]);

		const content = [
			E('div', { 'class': 'cbi-section-descr' }, [ _('Since the agent started.') ]),
			E('h4', [ _('Activity') ]),
			itemTable(activity),
			E('h4', [ _('Refused or dropped') ])
		];

		if (refused.length)
			content.push(E('div', { 'id': 'sims-refusals' }, [ itemTable(refused) ]));
		else
			content.push(E('p', { 'id': 'sims-no-refusals' }, [ E('em', [ _('Nothing was refused or dropped.') ]) ]));

		return section('sims-counters', _('Counters'), content);
	},

	renderStatus: function(st) {
		if (!st || typeof(st) != 'object' || st.error != null)
			return [ this.renderEmpty(st || { error: 'not_running' }) ];

		return [
			this.renderAgent(st),
			this.renderPeers(st),
			this.renderBindings(st),
			this.renderCounters(st)
		];
	},

	render: function(st) {
		poll.add(L.bind(this.refresh, this), 5);

		return E([], [
			E('h2', { 'name': 'content' }, [ _('SIMS Mobility Agent') ]),
			E('div', { 'class': 'cbi-map-descr' }, [ _('The running agent\'s state, refreshed every 5 seconds.') ]),
			E('div', { 'id': 'sims-status' }, this.renderStatus(st))
		]);
	},

	handleSaveApply: null,
	handleSave: null,
	handleReset: null
});
