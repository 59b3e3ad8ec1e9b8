// SPDX-License-Identifier: GPL-2.0-only
//
// Configuration of the SIMS Mobility Agent: /etc/config/sims, one
// `config agent 'agent'` and one `config peer` per roaming agreement.
//
// simsd refuses a config file whole if one option is wrong
// (firmware/simsd/src/config.rs, docs/CONFIG.md), so every rule it checks
// is checked here first: each field as it is typed (also against the
// other sections' current values: duplicate ids, overlapping prefixes),
// and the whole file once more before Save sends anything to the router.
// This page is stricter than simsd where simsd would take a value that
// cannot work (port 0, an MTU below 68), never looser.

'use strict';
'require view';
'require form';
'require uci';
'require ui';
'require dom';
'require tools.widgets as widgets';

const CONFIG = 'sims';

// sims-proto agent::MAX_PEERS: peer slots, and the tables and marks above
// `table` and `mark_base` that belong to simsd.
const MAX_PEERS = 250;
const U32_MAX = 4294967295;
const U32_SPAN_MAX = U32_MAX - (MAX_PEERS + 1);

// Keys anyone can read (docs/CONFIG.md §4, and the bytes 0..31 of test
// vectors): simsd refuses them, in enabled and disabled peers alike.
const EXAMPLE_KEYS = [
	'f5642a19c56e5f7a847fb2f478376cb73930683cce46c11db9b0cc288481eeaa',
	'000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'
];

// The agent section's options simsd knows, with their defaults (config.rs,
// owned.rs defaults, sims-proto AgentConfig::new).
const DEFAULTS = {
	port: '4434',
	advert_interval: '5',
	binding_lifetime: '300',
	credential_lifetime: '86400',
	max_bindings: '1024',
	max_per_peer: '512',
	max_per_node: '8',
	max_credentials: '1024',
	retransmit_initial_ms: '200',
	retransmit_tries: '5',
	table: '1144',
	rule_priority: '900',
	route_protocol: '153',
	mark_base: '0x51530000',
	tunnel_mtu: '1480',
	// <state dir>/traffic: the package's config sets /etc/sims/traffic.
	accounting_file: '/var/run/sims/traffic',
	accounting_interval: '3600'
};

// [min, max] of each number (config.rs: the Rust type, then its checks).
const RANGES = {
	port: [ 1, 65535 ],
	binding_lifetime: [ 1, 65535 ],
	credential_lifetime: [ 0, U32_MAX ],
	max_bindings: [ 1, 65536 ],
	max_per_peer: [ 0, U32_MAX ],
	max_per_node: [ 0, U32_MAX ],
	max_credentials: [ 0, U32_MAX ],
	retransmit_initial_ms: [ 0, U32_MAX ],
	retransmit_tries: [ 0, 255 ],
	table: [ 256, U32_SPAN_MAX ],
	rule_priority: [ 0, U32_MAX - 1 ],
	route_protocol: [ 1, 255 ],
	mark_base: [ 0, U32_SPAN_MAX ],
	tunnel_mtu: [ 68, 65535 ]
};

/* ---- single values, as simsd parses them ---- */

// A uci value as a list: an option is one value (never split at spaces,
// as simsd does not split it).
// An empty value is no value, as for simsd.
function asList(v) {
	return (Array.isArray(v) ? v : [ v ]).filter((x) => x != null && x !== '');
}

function utf8Length(s) {
	return new TextEncoder().encode(s).length;
}

// std::net::Ipv4Addr's syntax: four decimal octets, no leading zeros.
function parseIPv4(s) {
	const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(String(s));

	if (!m)
		return null;

	let n = 0;

	for (let i = 1; i <= 4; i++) {
		if ((m[i].length > 1 && m[i][0] == '0') || +m[i] > 255)
			return null;

		n = n * 256 + (+m[i]);
	}

	return n;
}

function prefixMask(len) {
	return len == 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

// sims_proto::Prefix: `a.b.c.d[/len]` (no length: /32), host bits zero.
function parsePrefix(s) {
	const parts = String(s).split('/');

	if (parts.length > 2)
		return { error: _('"%s" is not a prefix a.b.c.d/len').format(s) };

	const addr = parseIPv4(parts[0]);

	if (addr == null)
		return { error: _('"%s" is not a prefix a.b.c.d/len').format(s) };

	let len = 32;

	if (parts.length == 2) {
		if (!/^(\d|[12]\d|3[0-2])$/.test(parts[1]))
			return { error: _('"%s": the prefix length must be 0 to 32').format(s) };

		len = +parts[1];
	}

	if (((addr & prefixMask(len)) >>> 0) != addr)
		return { error: _('"%s" has host bits set: the network address is needed, as in 10.1.0.0/24').format(s) };

	return { addr: addr, len: len, text: (parts.length == 2) ? s : s + '/32' };
}

// Two prefixes share an address when one contains the other.
function prefixesOverlap(a, b) {
	const m = prefixMask(Math.min(a.len, b.len));

	return ((a.addr & m) >>> 0) == ((b.addr & m) >>> 0);
}

function checkId(v) {
	if (!/^[a-z0-9_-]{1,10}$/.test(v))
		return _('An id is 1 to 10 characters of a-z, 0-9, "-" and "_"');

	return true;
}

function checkIPv4(v) {
	return (parseIPv4(v) != null) ? true : _('Expecting an IPv4 address, as 192.0.2.1');
}

function checkKey(v) {
	if (!/^[0-9a-fA-F]{64}$/.test(v))
		return _('The key must be 64 hexadecimal digits (32 bytes)');

	const k = v.toLowerCase();

	if (/^0+$/.test(k))
		return _('This key is all zeros: generate one');

	if (EXAMPLE_KEYS.indexOf(k) > -1)
		return _('This is the example key of the documentation, known to anyone: generate one');

	return true;
}

function checkIfname(v) {
	if (v == '' || utf8Length(v) > 15 || /[\/:\s\u0085]/.test(v))
		return _('Expecting a Linux device name: 1 to 15 characters, without "/", ":" or spaces');

	return true;
}

function checkProvider(v) {
	return (utf8Length(v) <= 32) ? true : _('At most 32 bytes');
}

// A number as simsd's num(): decimal, or hexadecimal after "0x".
function parseNumber(v) {
	if (/^[0-9]+$/.test(v))
		return +v;

	if (/^0x[0-9a-fA-F]+$/.test(v))
		return parseInt(v.substring(2), 16);

	return null;
}

function checkNumber(name, v) {
	const r = RANGES[name], n = parseNumber(v);

	if (n == null || n < r[0] || n > r[1])
		return _('Expecting a whole number from %d to %d').format(r[0], r[1]);

	return true;
}

// simsd's secs_ms(): seconds with an optional fraction, in milliseconds.
function parseSeconds(v) {
	const m = /^(\d*)(?:\.(\d*))?$/.exec(v);

	if (!m || (m[1] == '' && (m[2] == null || m[2] == '')) || m[1].length > 15)
		return null;

	const frac = ((m[2] ?? '') + '000').substring(0, 3);

	return (+m[1] || 0) * 1000 + (+frac);
}

function checkSeconds(v, min_ms, max_ms) {
	const ms = parseSeconds(v);

	if (ms == null || ms < min_ms || ms > max_ms)
		return _('Expecting seconds from %s to %s').format(min_ms / 1000, max_ms / 1000);

	return true;
}

/* simsd keeps its accounting only in its own directories (a config edit
 * must not make it write or set aside any other file). */
function checkPath(v) {
	const m = /^\/(?:etc\/sims|var\/run\/sims)\/([A-Za-z0-9._-]{1,64})$/.exec(v);

	if (!m || m[1][0] == '.')
		return _('Expecting a file name in /etc/sims/ or /var/run/sims/, as /etc/sims/traffic');

	return true;
}

/* ---- the sections' current values, for the checks across sections ---- */

let mainMap = null;

function agentSid() {
	const s = uci.sections(CONFIG, 'agent');

	return s.length ? s[0]['.name'] : null;
}

function peerSids() {
	return uci.sections(CONFIG, 'peer').map((s) => s['.name']);
}

// The value of `opt` of section `sid` as the operator sees it now: its
// widget's in the open modal or the page, else uci's.
function current(map, sid, opt) {
	const maps = (map && map !== mainMap) ? [ map, mainMap ] : [ mainMap ];

	for (const m of maps) {
		if (!m || !m.root)
			continue;

		const res = m.lookupOption(opt, sid);

		if (res)
			return res[0].formvalue(sid);
	}

	return uci.get(CONFIG, sid, opt);
}

function peerEnabled(map, sid) {
	return current(map, sid, 'enabled') != '0';
}

// How a message names a section.
function sectionLabel(map, sid) {
	if (sid == agentSid())
		return _('this agent');

	const id = current(map, sid, 'id');

	return id ? _('agreement "%s" (%s)').format(sid, id) : _('agreement "%s"').format(sid);
}

// Every prefix of the agent and of the enabled peers but `except`.
function otherPrefixes(map, except) {
	const out = [];
	const sids = [ agentSid() ].concat(peerSids());

	for (const sid of sids) {
		if (sid == null || sid == except)
			continue;

		if (sid != agentSid() && !peerEnabled(map, sid))
			continue;

		for (const v of asList(current(map, sid, 'lan_prefix'))) {
			const p = parsePrefix(v);

			if (!p.error)
				out.push({ p: p, sid: sid });
		}
	}

	return out;
}

// A list of prefixes of section `sid`: each valid, no two overlapping,
// none overlapping another section's (when `clash`: the agent, or an
// enabled peer).
function checkPrefixList(map, sid, items, clash) {
	const mine = [];

	for (const v of items) {
		const p = parsePrefix(v);

		if (p.error)
			return p.error;

		for (const q of mine)
			if (clash && prefixesOverlap(p, q))
				return _('%s overlaps %s of this section: no address may be in two prefixes').format(p.text, q.text);

		mine.push(p);
	}

	if (!clash)
		return true;

	const others = otherPrefixes(map, sid);

	for (const p of mine)
		for (const o of others)
			if (prefixesOverlap(p, o.p))
				return _('%s overlaps %s of %s: no address may be in two prefixes').format(p.text, o.p.text, sectionLabel(map, o.sid));

	return true;
}

// The items of a DynamicList widget, and the text typed in its input
// (which Save takes as one more item when it is valid).
function listItems(option, sid) {
	const node = option.map.findElement('id', option.cbid(sid));

	if (!node)
		return { items: asList(current(option.map, sid, option.option)), typed: '' };

	const input = node.querySelector('.add-item > input[type="text"]');

	return {
		items: Array.prototype.map.call(node.querySelectorAll('.item > input[type="hidden"]'), (i) => i.value),
		typed: input ? input.value.trim() : ''
	};
}

// The validator of a lan_prefix list: called for the text being typed
// (value) and for the whole list (value '').
function validatePrefixes(section_id, value) {
	const isAgent = (section_id == agentSid());
	const clash = isAgent || peerEnabled(this.map, section_id);
	const list = listItems(this, section_id);
	const items = list.items;

	// The text typed (`value`), or, for the whole list, the text still in
	// the input if it is a prefix (its own check reports it otherwise).
	const typed = (value != null && value !== '') ? value
		: (list.typed != '' && !parsePrefix(list.typed).error) ? list.typed : '';

	if (typed != '') {
		const p = parsePrefix(typed);

		if (p.error)
			return p.error;

		if (items.indexOf(typed) < 0)
			items.push(typed);
	}

	if (items.length == 0 && clash)
		return _('At least one prefix is needed');

	return checkPrefixList(this.map, section_id, items, clash);
}

/* ---- the whole file, as simsd check reads it ---- */

// Every error simsd would find in what uci holds now (after the form was
// parsed into it): [{ sid, msg, other }], `other` the section of the
// earlier option of a clash. Unknown options are not reported: a newer
// simsd may know them, and simsd check judges them.
function checkConfig() {
	const errs = [];
	const agents = uci.sections(CONFIG, 'agent');
	const peers = uci.sections(CONFIG, 'peer');
	const err = (sid, msg, other) => errs.push({ sid: sid, msg: msg, other: other });

	// A single-valued option: the last value of a list, as for simsd; an
	// empty value is none.
	const val = (s, o) => {
		const v = asList(s[o]);

		return v.length ? v[v.length - 1] : null;
	};

	// Every value is checked, as simsd parses each.
	const check = (s, o, fn) => {
		for (const v of asList(s[o])) {
			const r = fn(v);

			if (r !== true)
				err(s['.name'], '%s: %s'.format(o, r));
		}
	};

	const label = (s) => (s['.type'] == 'agent') ? _('this agent')
		: val(s, 'id') ? _('agreement "%s" (%s)').format(s['.name'], val(s, 'id'))
		: _('agreement "%s"').format(s['.name']);

	const ids = [];
	const prefixes = [];
	let enabledPeers = 0;

	const addPrefixes = (s, used) => {
		const list = asList(s.lan_prefix);

		if (used && list.length == 0)
			err(s['.name'], _('%s has no LAN prefix').format(label(s)));

		for (const v of list) {
			const p = parsePrefix(v);

			if (p.error)
				err(s['.name'], 'lan_prefix: %s'.format(p.error));
			else if (used)
				prefixes.push({ p: p, s: s });
		}
	};

	if (agents.length == 0)
		err(null, _('There is no agent section'));
	else if (agents.length > 1)
		err(agents[1]['.name'], _('There is more than one agent section'));

	for (const a of agents.slice(0, 1)) {
		if (val(a, 'id') == null)
			err(a['.name'], _('The agent has no id'));

		check(a, 'id', checkId);
		check(a, 'provider', checkProvider);
		check(a, 'endpoint', checkIPv4);
		check(a, 'lan_ifname', checkIfname);
		check(a, 'wan_ifname', checkIfname);
		check(a, 'backend', (v) => [ 'auto', 'kernel', 'userspace' ].indexOf(v) > -1 || _('expecting auto, kernel or userspace'));
		check(a, 'advert_interval', (v) => checkSeconds(v, 50, 86400000));
		check(a, 'accounting_interval', (v) => checkSeconds(v, 10000, 86400000));
		check(a, 'accounting_file', checkPath);

		for (const name in RANGES)
			check(a, name, (v) => checkNumber(name, v));

		if (checkId(val(a, 'id')) === true)
			ids.push({ id: val(a, 'id'), s: a });

		addPrefixes(a, true);
	}

	for (const p of peers) {
		// Parsed in a disabled peer too; required and compared only in an
		// enabled one.
		check(p, 'id', checkId);
		check(p, 'endpoint', checkIPv4);
		check(p, 'key', checkKey);
		check(p, 'port', (v) => checkNumber('port', v));

		if (val(p, 'enabled') == '0') {
			addPrefixes(p, false);
			continue;
		}

		enabledPeers++;

		if (val(p, 'id') == null)
			err(p['.name'], _('Agreement "%s" has no peer id').format(p['.name']));
		else if (checkId(val(p, 'id')) === true)
			ids.push({ id: val(p, 'id'), s: p });

		if (val(p, 'endpoint') == null)
			err(p['.name'], _('%s has no WAN address').format(label(p)));

		if (val(p, 'key') == null)
			err(p['.name'], _('%s has no key').format(label(p)));

		addPrefixes(p, true);
	}

	if (enabledPeers > MAX_PEERS)
		err(null, _('More than %d enabled agreements').format(MAX_PEERS));

	for (let i = 0; i < ids.length; i++)
		for (let j = 0; j < i; j++)
			if (ids[i].id == ids[j].id)
				err(ids[i].s['.name'], _('Id "%s" of %s is also the id of %s').format(ids[i].id, label(ids[i].s), label(ids[j].s)), ids[j].s['.name']);

	for (let i = 0; i < prefixes.length; i++)
		for (let j = 0; j < i; j++)
			if (prefixesOverlap(prefixes[i].p, prefixes[j].p))
				err(prefixes[i].s['.name'], _('Prefix %s of %s overlaps %s of %s: no address may be in two prefixes')
					.format(prefixes[i].p.text, label(prefixes[i].s), prefixes[j].p.text, label(prefixes[j].s)), prefixes[j].s['.name']);

	return errs;
}

// A message as a sentence.
function sentence(msg) {
	return msg.charAt(0).toUpperCase() + msg.substring(1);
}

function gateError(errs) {
	return new Error(_('simsd would refuse this configuration:') + '\n' + errs.map((e) => '• ' + sentence(e.msg)).join('\n'));
}

// 32 random bytes as 64 lower-case hex digits, as `simsd keygen` prints.
function generateKey() {
	if (!window.crypto || typeof(window.crypto.getRandomValues) != 'function')
		throw new Error(_('This browser has no secure random generator: run "simsd keygen" on the router instead'));

	const b = new Uint8Array(32);

	window.crypto.getRandomValues(b);

	return Array.prototype.map.call(b, (x) => (x < 16 ? '0' : '') + x.toString(16)).join('');
}

// An option whose default is what simsd does without it: the default is
// shown, but not written where the option is absent.
function defaultWhenAbsent(o, def) {
	o.default = def;
	o.write = function(section_id, value) {
		if (value == def && this.cfgvalue(section_id) == null)
			return;

		return form.AbstractValue.prototype.write.call(this, section_id, value);
	};
}

/* ---- the view ---- */

return view.extend({
	load: function() {
		return uci.load(CONFIG).then(() => {
			// The package ships `config agent 'agent'`, which the init
			// script reads by name; make one if it is gone.
			if (uci.sections(CONFIG, 'agent').length == 0)
				uci.add(CONFIG, 'agent', 'agent');
		});
	},

	render: function() {
		let m, s, o;

		m = new form.Map(CONFIG, _('SIMS Mobility Agent'),
			_('SIMS keeps the open connections of mobile devices alive when they move between the hotspots of operators that have a roaming agreement. The agent advertises itself on the LAN and relays the sessions of visiting and departed devices through tunnels to the agents of their home networks.') + ' ' +
			_('Its state is shown under Status → SIMS.'));
		mainMap = m;

		/* -- the agent -- */

		s = m.section(form.TypedSection, 'agent', _('Agent'));
		s.anonymous = true;
		s.addremove = false;

		s.tab('general', _('General'));
		s.tab('advanced', _('Advanced'));

		o = s.taboption('general', form.Flag, 'enabled', _('Enabled'),
			_('Start the agent. It starts only with a valid configuration: check it with "simsd check" after editing the file by hand.'));
		o.rmempty = false;

		o = s.taboption('general', form.Value, 'id', _('Agent id'),
			_('This agent\'s id, advertised to devices and sent to peers. Each peer configures it as the id of its agreement with this agent: 1 to 10 characters of a-z, 0-9, "-" and "_".'));
		o.rmempty = false;
		o.placeholder = 'ma-a';
		o.validate = function(section_id, value) {
			const r = checkId(value);

			if (r !== true)
				return r;

			for (const sid of peerSids())
				if (peerEnabled(this.map, sid) && current(this.map, sid, 'id') == value)
					return _('This is also the id of agreement "%s": ids must be unique').format(sid);

			return true;
		};

		o = s.taboption('general', form.Value, 'provider', _('Provider name'),
			_('Display name advertised to devices on the LAN (at most 32 bytes).'));
		o.validate = function(section_id, value) {
			return checkProvider(value);
		};

		o = s.taboption('general', form.ListValue, 'endpoint_mode', _('WAN address'),
			_('The address peers reach this agent at, without NAT: the local end of every tunnel.'));
		o.value('wan', _('Follow the WAN device\'s address (DHCP, PPPoE)'));
		o.value('static', _('Fixed address'));
		// Not an option of simsd: no endpoint option means "follow".
		o.cfgvalue = function(section_id) {
			return uci.get(CONFIG, section_id, 'endpoint') ? 'static' : 'wan';
		};
		o.write = function() {};
		o.remove = function() {};

		o = s.taboption('general', form.Value, 'endpoint', _('Fixed WAN address'),
			_('This router\'s public IPv4 address, as the peers configure it. When the WAN address is followed instead, simsd uses the first IPv4 address of the WAN device and tells the peers when it changes.'));
		o.depends('endpoint_mode', 'static');
		o.rmempty = false;
		o.placeholder = '192.0.2.1';
		o.validate = function(section_id, value) {
			return checkIPv4(value);
		};

		o = s.taboption('general', form.DynamicList, 'lan_prefix', _('LAN prefixes'),
			_('Every subnet of the LAN, as network/length (10.1.0.0/24): the agent issues credentials for these, and no other LAN source may leave by the WAN. No prefix may overlap another one of this agent or of an enabled agreement.'));
		o.rmempty = false;
		o.placeholder = '10.1.0.0/24';
		o.validate = validatePrefixes;

		o = s.taboption('general', widgets.DeviceSelect, 'lan_ifname', _('LAN device'),
			_('The LAN bridge: advertisements, device messages and visitors\' host routes use it (default br-lan).'));
		o.noaliases = true;
		defaultWhenAbsent(o, 'br-lan');
		o.validate = function(section_id, value) {
			return (value == '' || value == null) ? true : checkIfname(value);
		};

		o = s.taboption('general', widgets.DeviceSelect, 'wan_ifname', _('WAN device'),
			_('The WAN device (e.g. wan, eth1, pppoe-wan), not the network interface name (default wan).'));
		o.noaliases = true;
		defaultWhenAbsent(o, 'wan');
		o.validate = function(section_id, value) {
			return (value == '' || value == null) ? true : checkIfname(value);
		};

		o = s.taboption('general', form.ListValue, 'backend', _('Tunnel implementation'),
			_('Automatic uses kernel ipip tunnels if the kernel has them (kmod-ipip), else simsd\'s own. Both put the same packets on the wire.'));
		o.value('auto', _('Automatic'));
		o.value('kernel', _('Kernel ipip'));
		o.value('userspace', _('Userspace'));
		defaultWhenAbsent(o, 'auto');

		const number = (name, title, descr) => {
			const n = s.taboption('advanced', form.Value, name, title, descr);

			n.placeholder = DEFAULTS[name];
			n.validate = function(section_id, value) {
				return (value == '' || value == null) ? true : checkNumber(name, value);
			};

			return n;
		};

		number('port', _('Control port'), _('UDP port of the protocol, on the LAN and the WAN. Peers must use the same one, or set it in their agreement.'));

		o = s.taboption('advanced', form.Value, 'advert_interval', _('Advertisement interval'),
			_('Seconds between advertisements on the LAN (0.05 to 86400; fractions allowed).'));
		o.placeholder = DEFAULTS.advert_interval;
		o.validate = function(section_id, value) {
			return (value == '' || value == null) ? true : checkSeconds(value, 50, 86400000);
		};

		number('binding_lifetime', _('Binding lifetime'), _('Seconds; devices refresh their bindings at a third of it. Keep it well above the retransmission time (30 or more).'));
		number('credential_lifetime', _('Credential lifetime'), _('Seconds an issued credential is remembered without use.'));
		number('max_bindings', _('Bindings at most'), _('Home and visitor bindings in total (1 to 65536).'));
		number('max_per_peer', _('Bindings per peer'), _('Bindings with one roaming partner at most.'));
		number('max_per_node', _('Bindings per device'), _('Bindings of one device at most.'));
		number('max_credentials', _('Credentials remembered'), _('Credentials remembered at most.'));
		number('retransmit_initial_ms', _('First retransmission'), _('Milliseconds before a peer request is sent again; the interval doubles each time.'));
		number('retransmit_tries', _('Retransmissions'), _('Retransmissions before a peer request fails (0 to 255).'));
		number('table', _('Routing table'), _('simsd owns this table and the %d above it (per-peer tables). None of them may be the kernel\'s own (253 to 255).').format(MAX_PEERS));
		number('rule_priority', _('Rule priority'), _('Priority of the catch-all rule; per-peer rules use the next one. The default comes before mwan3, netifd and pbr.'));
		number('route_protocol', _('Route protocol'), _('Protocol tag of every route and rule simsd installs (1 to 255).'));
		number('mark_base', _('Firewall mark base'), _('Peer i\'s packets carry mark base + 1 + i: choose it so that no other marking (mwan3, SQM) collides. Decimal, or hexadecimal after 0x.'));
		number('tunnel_mtu', _('Tunnel MTU'), _('MTU of the tunnel devices (68 to 65535).'));

		o = s.taboption('advanced', form.Value, 'accounting_file', _('Traffic accounting file'),
			_('Where the traffic totals of each roaming partner are kept across restarts, and on flash across reboots: a file in /etc/sims/ (the package sets /etc/sims/traffic) or /var/run/sims/. Empty: simsd\'s state directory (/var/run/sims/traffic), which a reboot clears.'));
		o.placeholder = DEFAULTS.accounting_file;
		o.validate = function(section_id, value) {
			return (value == '' || value == null) ? true : checkPath(value);
		};

		o = s.taboption('advanced', form.Value, 'accounting_interval', _('Accounting save interval'),
			_('Seconds between writes of the accounting file (10 to 86400): it may be on flash. A power cut loses at most one interval of counts.'));
		o.placeholder = DEFAULTS.accounting_interval;
		o.validate = function(section_id, value) {
			return (value == '' || value == null) ? true : checkSeconds(value, 10000, 86400000);
		};

		/* -- the roaming agreements -- */

		s = m.section(form.GridSection, 'peer', _('Roaming agreements'),
			_('One agreement per peer agent. Both sides configure the same key, and each configures the other\'s id, WAN address and LAN prefixes. A disabled agreement is kept but not used.'));
		s.anonymous = false;
		s.addremove = true;
		s.sortable = false;
		s.nodescriptions = true;
		s.addbtntitle = _('Add agreement');
		s.modaltitle = function(section_id) {
			const id = uci.get(CONFIG, section_id, 'id');

			return '%h'.format(_('Roaming agreement') + ' » ' + (id || section_id));
		};

		o = s.option(form.Flag, 'enabled', _('Enabled'));
		o.default = '1';
		o.editable = true;

		o = s.option(form.Value, 'id', _('Peer id'),
			_('The peer agent\'s own id, as it advertises it: 1 to 10 characters of a-z, 0-9, "-" and "_". Its tunnel is sims-&lt;id&gt;.'));
		o.rmempty = false;
		o.placeholder = 'ma-b';
		o.validate = function(section_id, value) {
			const r = checkId(value);

			if (r !== true)
				return r;

			if (!peerEnabled(this.map, section_id))
				return true;

			const a = agentSid();

			if (a != null && current(this.map, a, 'id') == value)
				return _('This is the id of this agent: a peer\'s id must differ from it');

			for (const sid of peerSids())
				if (sid != section_id && peerEnabled(this.map, sid) && current(this.map, sid, 'id') == value)
					return _('Agreement "%s" has this id too: ids of enabled agreements must be unique').format(sid);

			return true;
		};

		o = s.option(form.Value, 'description', _('Description'),
			_('For you only: simsd ignores it.'));

		o = s.option(form.Value, 'endpoint', _('Peer WAN address'),
			_('Where the peer agent is first looked for. If its address changes, simsd follows it once the peer has proved it from the new one.'));
		o.rmempty = false;
		o.placeholder = '198.51.100.2';
		o.validate = function(section_id, value) {
			return checkIPv4(value);
		};

		o = s.option(form.DynamicList, 'lan_prefix', _('Peer LAN prefixes'),
			_('The peer\'s LAN subnets, as network/length. They may not overlap this agent\'s or another enabled agreement\'s.'));
		o.placeholder = '10.2.0.0/24';
		o.validate = validatePrefixes;
		o.textvalue = function(section_id) {
			const v = asList(this.cfgvalue(section_id));

			return v.length ? '%h'.format(v.join(', ')) : E('em', [ _('none') ]);
		};

		o = s.option(form.Value, 'key', _('Key'),
			_('The agreement\'s key: 64 hexadecimal digits, the same on both sides. Generate it on one side and give it to the other operator over a secure channel.'));
		o.modalonly = true;
		o.password = true;
		o.rmempty = false;
		o.validate = function(section_id, value) {
			return checkKey(value);
		};
		o.renderWidget = function(section_id, option_index, cfgvalue) {
			const node = form.Value.prototype.renderWidget.apply(this, [ section_id, option_index, cfgvalue ]);

			node.appendChild(E('button', {
				'class': 'cbi-button cbi-button-neutral sims-keygen',
				'id': 'sims-keygen',
				'type': 'button',
				'title': _('Make a new random key in this browser, as "simsd keygen" does'),
				'click': ui.createHandlerFn(this, function(ev) {
					const w = this.getUIElement(section_id);
					let key;

					try {
						key = generateKey();
					}
					catch (e) {
						ui.addNotification(null, E('p', [ e.message ]), 'error');
						return;
					}

					w.setValue(key);
					w.node.setAttribute('data-changed', true);

					// Shown, so that it can be copied for the other operator.
					const input = w.node.querySelector('input');

					if (input)
						input.type = 'text';

					w.triggerValidation();
				})
			}, [ _('Generate key') ]));

			return node;
		};

		o = s.option(form.Value, 'port', _('Peer control port'),
			_('The peer\'s UDP control port, if it is not this agent\'s.'));
		o.modalonly = true;
		o.placeholder = uci.get(CONFIG, agentSid(), 'port') || DEFAULTS.port;
		o.validate = function(section_id, value) {
			return (value == '' || value == null) ? true : checkNumber('port', value);
		};

		// The modal's Save sends its changes to the router's staging area:
		// check the file first (the errors that involve this agreement).
		s.addModalOptions = function(ms, section_id) {
			const modal = ms.map;
			const save = modal.save;

			if (!uci.get(CONFIG, section_id, 'id')) {
				const id = ms.children.filter((c) => c.option == 'id')[0];
				const guess = section_id.toLowerCase();

				if (id && checkId(guess) === true)
					id.default = guess;
			}

			modal.save = function(cb, silent) {
				return save.call(this, () => {
					return Promise.resolve(cb ? cb() : null).then(() => {
						const errs = checkConfig().filter((e) => e.sid == section_id || e.other == section_id);
						const box = this.root ? this.root.querySelector('.sims-modal-errors') : null;

						if (box)
							box.remove();

						if (errs.length) {
							if (this.root)
								this.root.insertBefore(E('div', { 'class': 'alert-message warning sims-modal-errors', 'id': 'sims-modal-errors' }, [
									E('p', [ _('simsd would refuse this configuration:') ]),
									E('ul', { 'style': 'margin:.25em 0 0 1.5em' }, errs.map((e) => E('li', [ sentence(e.msg) ])))
								]), this.root.firstChild);

							throw gateError(errs);
						}
					});
				}, silent);
			};
		};

		return m.render();
	},

	// Save stages the changes on the router (uci); check the whole file
	// first, as simsd will when they are applied.
	handleSave: function(ev) {
		return mainMap.save(() => {
			const errs = checkConfig();

			if (errs.length)
				throw gateError(errs);
		});
	}
});
